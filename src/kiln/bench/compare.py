"""kiln against the unoptimized baseline in the same run, and the efficiency factor it yields.

:func:`run_with_baseline` measures an in-process setup (kiln's runtime on the engine kiln built)
and then the source model as the ``unoptimized`` baseline (fp32, graph optimizations off, one
request per run) under the same plan and payloads; kiln's throughput ÷ the baseline's at the same
p99 bound is the engine's efficiency factor, recorded in the engine's manifest in the cache
(:func:`kiln.cache.efficiency.record_efficiency_factor`) for EPU metering.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from kiln.bench.efficiency import Capacity, capacity_at, efficiency_factor
from kiln.bench.engines import obtain_bench_engine
from kiln.bench.peers.ort import UnoptimizedTarget
from kiln.bench.report import BenchReport
from kiln.bench.runner import BenchProgress, run_bench
from kiln.bench.setup import BenchSetup, requests_for, run_setup
from kiln.cache.efficiency import record_efficiency_factor
from kiln.compile.spec import BuildSpec
from kiln.errors import ConfigError, describe

KILN_VARIANT = "kiln"
BASELINE_VARIANT = "unoptimized"


@dataclass(frozen=True)
class Efficiency:
    """The comparison: both capacities at ``bound_ms``, the factor (``None`` when either has no step
    within the bound) and the artifact folder it was recorded in (``None``: not recorded)."""

    bound_ms: float
    kiln: Capacity
    baseline: Capacity
    factor: float | None
    recorded_in: Path | None

    def note(self) -> str:
        if self.factor is None:
            who = "kiln" if self.kiln.step is None else "the baseline"
            return f"efficiency factor not measured: no step of {who} had p99 <= {self.bound_ms:g} ms"
        where = f"; recorded in {self.recorded_in}" if self.recorded_in else ""
        speeds = (
            f"kiln {self.kiln.throughput_per_s:.0f}/s vs unoptimized {self.baseline.throughput_per_s:.0f}/s"
        )
        return f"efficiency factor {self.factor:.2f}: {speeds} at p99 <= {self.bound_ms:g} ms{where}"


def check_baseline_setup(setup: BenchSetup) -> Path:
    """The ONNX model to run as the baseline; ``ConfigError`` unless ``setup`` runs one in-process."""
    if setup.engine is None or setup.engine.suffix != ".onnx" or setup.mode != "runtime":
        raise ConfigError(
            describe(
                "--baseline needs an ONNX model run in-process by kiln's runtime",
                seen=f"engine={setup.engine}, url={setup.url}, mode={setup.mode}",
                fix="give --engine MODEL.onnx (mode runtime); the baseline runs the same file unoptimized",
            )
        )
    return setup.engine


async def run_with_baseline(
    setup: BenchSetup, *, bound_ms: float, record: bool = True, progress: BenchProgress | None = None
) -> tuple[BenchReport, Efficiency]:
    """kiln, then the baseline, on ``setup``'s plan; one report with both variants, and the factor."""
    model = check_baseline_setup(setup)
    kiln = await run_setup(setup, progress=progress)
    kiln = replace(kiln, variants={KILN_VARIANT: next(iter(kiln.variants.values()), ())})
    baseline = await run_bench(UnoptimizedTarget(model), replace(setup.plan, soak_s=None),
                               requests=lambda specs: requests_for(setup, specs), variant=BASELINE_VARIANT,
                               model=setup.model_name, progress=progress)  # fmt: skip
    kiln_cap = capacity_at(KILN_VARIANT, kiln.variants[KILN_VARIANT], bound_ms)
    base_cap = capacity_at(BASELINE_VARIANT, baseline.variants.get(BASELINE_VARIANT, ()), bound_ms)
    factor = efficiency_factor(kiln_cap, base_cap)
    recorded = None
    if record and factor is not None:
        spec = BuildSpec(
            precision=setup.precision, max_batch_size=max(setup.max_batch_size, setup.batch_size)
        )
        loaded = obtain_bench_engine(model, spec=spec, cache_dir=setup.cache_dir)  # a cache hit
        loaded.engine.close()
        recorded = record_efficiency_factor(loaded.artifact, factor).path
    result = Efficiency(bound_ms, kiln_cap, base_cap, factor, recorded)
    merged = kiln.merged(baseline)
    return replace(merged, notes=(*merged.notes, result.note())), result
