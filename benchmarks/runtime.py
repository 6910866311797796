"""Runtime benchmarks: hot swap under load, the cost of a transient fault, batching vs one per run.

    python benchmarks/runtime.py --out bench-out            # full-size ctr and cnn, ~15 minutes
    python benchmarks/runtime.py --quick --out /tmp/quick   # tiny models, seconds (a smoke run)
    python benchmarks/runtime.py --parts swaps --warmups default,every,batch1 --out bench-out

Everything runs in one process on kiln's ONNX Runtime engines, built through the engine cache from
the example models (``kiln.examples``), under open-loop (Poisson) load from ``kiln.bench``:

1. **Swaps**: a fixed rate for the whole soak while a driver loads a new version (the same model
   with other weights, seeds 1..3 in turn) every ``--swap-every-s``. A *swap window* runs from the
   start of a load to 1 s after the replaced version is released; the rest is *steady state*.
   Target: p99 in swap windows <= 1.25 x steady p99, and no failed request. One soak per warm-up
   policy named in ``--warmups`` (default: ``default,every``), one after the other in the same run.
2. **Fault**: one transient ``EngineFailed`` injected (``FaultSpec(fail_next=1)``) every 0.5 s at a
   low rate; the latency of the requests whose batch was retried vs the others. Target: <= 10 ms added.
3. **Batching**: open-loop rates rising by ``--rate-factor`` for dynamic batching, one request per
   run through the runtime (``max_batch_size=1``) and the bare engine (no runtime), interleaved;
   for each mode the highest rate whose p99 stays under the model's bound with no failure.
   Target: batching >= 3 x one per run on the cnn.

Writes ``runtime.json`` (a kiln bench report), ``runtime.md``, ``<model>-batching.png`` and
``<model>-swaps.png`` into ``--out``, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_parts import Outcome, Prepared, batching_sweep, fault_run, prepare, swap_soak
from runtime_summary import summarize

from kiln.bench import BenchReport, describe_machine, render_markdown
from kiln.bench.plots import plot_latency_throughput, plot_timeline
from kiln.runtime import BatchingConfig, FallbackConfig, ModelConfig, VersionPolicy
from kiln.runtime.batching.buckets import warmup_sizes

WARMUPS: dict[str, str] = {
    "default": "warm-up: the engine's plan",
    "every": "warm-up on every batch size",
    "batch1": "warm-up on batch 1",
}
"""``--warmups`` names and their labels in the report: the runtime's default (each engine's
``warmup_plan``: batch 1 for ONNX Runtime on CPU), every batch size the model serves (1, the
preferred sizes and the maximum, what engines that prepare each shape get), or batch 1."""


def warmup_override(name: str, batching: BatchingConfig) -> tuple[int, ...] | None:
    """``VersionPolicy.warmup_batch_sizes`` for a ``--warmups`` name (``None``: the engine's plan)."""
    if name == "default":
        return None
    if name == "every":
        return warmup_sizes(batching.preferred_batch_sizes, batching.max_batch_size)
    return (1,)


@dataclass(frozen=True)
class ModelPlan:
    """Per-model knobs: the serving config with batching, rates, and the p99 bound of the sweep."""

    name: str
    size: str
    config: ModelConfig
    swap_rate: float
    fault_rate: float
    bound_ms: float
    start_rate: float
    max_rate: float
    factor: float
    swap_every_s: float = 2.0
    step_s: float = 4.0
    int_range: tuple[int, int] = (0, 100)


@dataclass(frozen=True)
class Settings:
    quick: bool
    swaps: int
    swap_every_s: float | None
    step_s: float | None
    warmup_s: float
    rate_factor: float | None
    fault_s: float
    out: Path
    models: tuple[str, ...] = ("ctr", "cnn")
    parts: tuple[str, ...] = ("swaps", "fault", "batching")
    warmups: tuple[str, ...] = ("default", "every")
    swap_rate: float | None = None


def _config(instances: int, batch: int, delay_us: int) -> ModelConfig:
    return ModelConfig(
        num_instances=instances,
        batching=BatchingConfig(max_batch_size=batch, max_queue_delay_us=delay_us, max_queue_size=4096),
        fallback=FallbackConfig(probe_in_background=False),
        versions=VersionPolicy(max_loaded_versions=1, drain_timeout_s=30.0),
    )


def model_plans(quick: bool) -> list[ModelPlan]:
    size = "tiny" if quick else "full"
    return [
        ModelPlan("ctr", size, _config(2, 64, 2000), swap_rate=1000.0 if not quick else 200.0,
                  fault_rate=100.0, bound_ms=10.0, start_rate=250.0,
                  max_rate=20000.0 if not quick else 1000.0, factor=1.5 if not quick else 4.0,
                  swap_every_s=2.0 if not quick else 0.3, step_s=4.0 if not quick else 0.2,
                  int_range=(0, 1000)),
        ModelPlan("cnn", size, _config(1, 8, 20000), swap_rate=4.0 if not quick else 50.0,
                  fault_rate=4.0 if not quick else 50.0, bound_ms=500.0 if not quick else 50.0,
                  start_rate=4.0 if not quick else 100.0, max_rate=400.0,
                  factor=1.3 if not quick else 4.0, swap_every_s=3.0 if not quick else 0.3,
                  step_s=10.0 if not quick else 0.2),
    ]  # fmt: skip


async def run_model(plan: ModelPlan, settings: Settings, root: Path) -> tuple[Outcome, Prepared]:
    prepared = prepare(plan.name, plan.size, root, max_batch_size=plan.config.batching.max_batch_size)
    print(f"[{plan.name}] engines ready: {len(prepared.artifacts)} versions", flush=True)
    swaps = {}
    for name in settings.warmups if "swaps" in settings.parts else ():
        sizes = warmup_override(name, plan.config.batching)
        config = replace(plan.config, versions=replace(plan.config.versions, warmup_batch_sizes=sizes))
        variant = WARMUPS[name]
        swaps[variant] = await swap_soak(prepared, config, rate=settings.swap_rate or plan.swap_rate,
                                         swaps=settings.swaps,
                                         every_s=settings.swap_every_s or plan.swap_every_s)  # fmt: skip
        print(f"[{plan.name}] swaps done ({variant})", flush=True)
    fault = None
    if "fault" in settings.parts:
        fault = await fault_run(prepared, plan.config, rate=plan.fault_rate, duration_s=settings.fault_s)
        print(f"[{plan.name}] fault done", flush=True)
    factor, step_s = settings.rate_factor or plan.factor, settings.step_s or plan.step_s
    sweeps = {}
    if "batching" in settings.parts:
        sweeps = await batching_sweep(
            prepared, plan.config, bound_ms=plan.bound_ms, start_rate=plan.start_rate, max_rate=plan.max_rate,
            factor=factor, step_s=step_s, warmup_s=settings.warmup_s,
        )  # fmt: skip
        print(f"[{plan.name}] sweeps done", flush=True)
    every_s = settings.swap_every_s or plan.swap_every_s
    return Outcome(plan.name, plan.bound_ms, every_s, swaps, fault, sweeps), prepared


def write_outputs(
    outcomes: list[Outcome], settings: Settings, started: str, command: str, load_at_start: float
) -> str:
    machine = describe_machine()
    load = f"1-minute load average: {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    report = BenchReport(
        title="kiln runtime benchmarks",
        model=", ".join(o.model for o in outcomes),
        machine=machine,
        started_at=started,
        variants={f"{o.model} {mode}": tuple(steps) for o in outcomes for mode, steps in o.sweeps.items()},
        soaks={f"{o.model} swaps, {v}": soak for o in outcomes for v, soak in o.swaps.items()},
        notes=(f"command: {command}", load),
    )
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "runtime.json")
    for o in outcomes:
        title = f"{o.model}: p99 vs throughput, batching vs one request per run"
        if o.sweeps:
            plot_latency_throughput(o.sweeps, out / f"{o.model}-batching.png", title=title)
        for number, (variant, soak) in enumerate(o.swaps.items()):
            title = f"{o.model}: latency over time, a new version every {o.swap_every_s:g} s ({variant})"
            plot_timeline(soak, out / f"{o.model}-swaps-{number + 1}.png", title=title)
    text = summarize(outcomes, f"{machine.line()}; {load}", started, command) + "\n" + render_markdown(report)
    (out / "runtime.md").write_text(text)
    return text


def parse(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny models, a few seconds: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--swaps", type=int, default=None, help="versions loaded during the swap soak")
    parser.add_argument("--swap-every-s", type=float, default=None)
    parser.add_argument(
        "--swap-rate", type=float, default=None, help="requests/s of the swap soaks (default: per model)"
    )
    parser.add_argument("--step-s", type=float, default=None, help="measured seconds per sweep step")
    parser.add_argument("--rate-factor", type=float, default=None, help="rate step of the sweeps")
    parser.add_argument("--models", default="ctr,cnn", help="comma-separated: ctr, cnn")
    parser.add_argument(
        "--parts", default="swaps,fault,batching", help="comma-separated: swaps, fault, batching"
    )
    parser.add_argument(
        "--warmups",
        default="default,every",
        help="warm-up policies of the swap soaks, one soak each, side by side: comma-separated "
        "default (the engine's plan), every (every batch size), batch1",
    )
    args = parser.parse_args(argv)
    warmups = tuple(w.strip() for w in args.warmups.split(",") if w.strip())
    unknown = [w for w in warmups if w not in WARMUPS]
    if unknown or not warmups:
        parser.error(f"--warmups {args.warmups!r}: unknown {unknown}; use some of {', '.join(WARMUPS)}")
    quick = bool(args.quick)
    return Settings(
        quick=quick,
        swaps=args.swaps or (2 if quick else 50),
        swap_every_s=args.swap_every_s,
        step_s=args.step_s,
        warmup_s=0.1 if quick else 1.0,
        rate_factor=args.rate_factor,
        fault_s=0.5 if quick else 15.0,
        out=args.out,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()),
        warmups=warmups,
        swap_rate=args.swap_rate,
    )


def main(argv: list[str] | None = None, *, only: Callable[[ModelPlan], bool] | None = None) -> int:
    settings = parse(argv)
    logging.getLogger("kiln.runtime").setLevel(logging.ERROR)  # injected faults log a warning each
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load_at_start = os.getloadavg()[0]
    command = "python benchmarks/runtime.py " + " ".join(argv if argv is not None else sys.argv[1:])
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        for plan in model_plans(settings.quick):
            if plan.name not in settings.models or (only is not None and not only(plan)):
                continue
            outcome, prepared = asyncio.run(run_model(plan, settings, Path(tmp)))
            with contextlib.suppress(Exception):
                prepared.close()
            outcomes.append(outcome)
    print(write_outputs(outcomes, settings, started, command, load_at_start))
    return 0


__all__ = ["ModelPlan", "Settings", "dataclasses", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
