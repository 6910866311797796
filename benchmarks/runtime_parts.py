"""The measurements of ``benchmarks/runtime.py``: engines per version, the swap soak, the fault run
and the batching sweep (``runtime_summary.py`` holds the Markdown summary against the targets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kiln import examples
from kiln._clock import SYSTEM_CLOCK
from kiln.bench import (
    EngineTarget,
    LatencyHistogram,
    MarkerLog,
    OpenLoop,
    Reply,
    RequestPool,
    RuntimeTarget,
    Soak,
    SoakResult,
    StepResult,
    SwapWindows,
    Target,
    run_open,
    run_soak,
)
from kiln.bench.engines import obtain_bench_engine
from kiln.compile.backends.base import Engine, EngineArtifact
from kiln.compile.data import SampleSet
from kiln.compile.registry import create_backend
from kiln.compile.spec import BuildSpec
from kiln.runtime import FaultSpec, ModelConfig, Runtime, VersionState
from kiln.types import Tensors

NUM_VERSIONS = 4  # weights seeds 0..3; swaps cycle through seeds 1..3 and back to 0


@dataclass
class Prepared:
    """Built engine artifacts (one per weights seed), the payloads, and a loader."""

    name: str
    artifacts: list[EngineArtifact]
    pool: RequestPool
    backend: object = field(default_factory=lambda: create_backend("onnxruntime"))

    def factory(self, index: int) -> Callable[[], Engine]:
        artifact = self.artifacts[index % len(self.artifacts)]
        backend = self.backend
        return lambda: backend.load(artifact)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.artifacts.clear()


@dataclass(frozen=True)
class FaultResult:
    """Latencies of requests whose batch was retried and of the others, and their *overhead*: the
    latency less the request's queue wait and its (successful) batch's compute. A retry adds the
    failed attempt, the instance rebuild and the re-run hand-off to the overhead, while queueing
    behind other requests (which load noise makes large) stays out of it."""

    rate: float
    faults: int
    clean: LatencyHistogram
    retried: LatencyHistogram
    clean_overhead: LatencyHistogram
    retried_overhead: LatencyHistogram
    failed: int

    @property
    def added_p50_ms(self) -> float:
        return self.retried_overhead.percentile_ms(50) - self.clean_overhead.percentile_ms(50)

    @property
    def added_max_ms(self) -> float:
        return self.retried_overhead.max_ns / 1e6 - self.clean_overhead.percentile_ms(50)


@dataclass(frozen=True)
class Outcome:
    model: str
    bound_ms: float
    swap_every_s: float
    swaps: dict[str, SoakResult]
    fault: FaultResult | None
    sweeps: dict[str, list[StepResult]]


def prepare(name: str, size: str, root: Path, *, max_batch_size: int) -> Prepared:
    """Build the example model with NUM_VERSIONS weight seeds through the engine cache."""
    folder = root / f"{name}-{size}"
    spec = BuildSpec(max_batch_size=max_batch_size)
    artifacts = []
    for seed in range(NUM_VERSIONS):
        model = examples.build_model(name, folder / f"seed{seed}.onnx", size=size, seed=seed)  # type: ignore[arg-type]
        built = obtain_bench_engine(model, spec=spec, cache_dir=root / "cache")
        built.engine.close()
        artifacts.append(built.artifact)
    return Prepared(name, artifacts, request_pool(name, size))


def request_pool(name: str, size: str, count: int | None = None) -> RequestPool:
    """One-row requests cycling through ``count`` validation samples of the example ``name``
    (default 256, 16 for the cnn's large images); any engine of the example serves them."""
    count = count or (256 if name != "cnn" else 16)
    data = examples.make_samples(name, count, kind="validation", size=size, labels=False)  # type: ignore[arg-type]
    inputs = {k: v for k, v in data.items() if not k.startswith("_")}
    return RequestPool.from_samples(SampleSet(inputs), examples.EXAMPLES[name].inputs(size))  # type: ignore[arg-type]


async def _serving(prepared: Prepared, config: ModelConfig) -> Runtime:
    runtime = Runtime()
    runtime.add_model(prepared.name, config)
    status = await runtime.load_version(prepared.name, "v0", prepared.factory(0)).wait()
    assert status.state is VersionState.READY, status
    return runtime


async def _drive_swaps(
    runtime: Runtime, prepared: Prepared, log: MarkerLog, swaps: int, every_s: float
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(every_s)
    for k in range(1, swaps + 1):
        begun = loop.time()
        log.mark("load-start", f"load v{k}")
        handle = runtime.load_version(prepared.name, f"v{k}", prepared.factory(k))
        active = False
        while not handle.done():
            if not active and handle.state is VersionState.READY:
                log.mark("active", f"v{k} active")
                active = True
            await asyncio.sleep(0.002)
        status = handle.result()
        if status.state is not VersionState.READY:
            log.mark("failed", f"v{k} {status.state}: {status.reason}")
            continue
        if not active:
            log.mark("active", f"v{k} active")
        log.mark("released", f"v{k - 1} released")
        await asyncio.sleep(max(0.0, every_s - (loop.time() - begun)))


async def swap_soak(
    prepared: Prepared,
    config: ModelConfig,
    *,
    rate: float,
    swaps: int,
    every_s: float,
    before_load: Callable[[], object] | None = None,
) -> SoakResult:
    """A fixed-rate soak while a new version is loaded every ``every_s``; phases steady/swap.
    ``before_load`` runs once the first version serves, before the load starts (e.g. parking a
    standby engine so that even the first swap is a weight refit)."""
    runtime = await _serving(prepared, config)
    if before_load is not None:
        before_load()
    log = MarkerLog(SYSTEM_CLOCK)
    windows = SwapWindows(log, after_s=1.0)
    spec = Soak(rate, duration_s=every_s * (swaps + 1) + 1.5, seed=1)
    soak = run_soak(RuntimeTarget(runtime, prepared.name), prepared.pool, spec, markers=log, phase_of=windows)
    result, _ = await asyncio.gather(soak, _drive_swaps(runtime, prepared, log, swaps, every_s))
    await runtime.aclose()
    return result


class _RetryTracking(RuntimeTarget):
    """Splits latencies into requests whose batch was retried and the others."""

    def __init__(self, runtime: Runtime, model: str) -> None:
        super().__init__(runtime, model)
        self.clean, self.retried = LatencyHistogram(), LatencyHistogram()
        self.clean_overhead, self.retried_overhead = LatencyHistogram(), LatencyHistogram()

    async def infer(self, inputs: Tensors) -> Reply:
        sent = time.perf_counter_ns()
        result = await self.runtime.infer(self.model, inputs)
        latency = time.perf_counter_ns() - sent
        overhead = latency - result.queue_ns - result.compute_ns
        if result.retries:
            self.retried.record_ns(latency)
            self.retried_overhead.record_ns(overhead)
        else:
            self.clean.record_ns(latency)
            self.clean_overhead.record_ns(overhead)
        return Reply(result.queue_ns, result.compute_ns, result.version)


async def fault_run(
    prepared: Prepared, config: ModelConfig, *, rate: float, duration_s: float
) -> FaultResult:
    """Open-loop load at a low rate; one transient engine failure injected every 0.5 s."""
    runtime = await _serving(prepared, config)
    slot = runtime.model(prepared.name)
    target = _RetryTracking(runtime, prepared.name)
    every_s = min(0.5, duration_s / 4)

    async def inject() -> None:
        while True:
            await asyncio.sleep(every_s)
            slot.set_faults(FaultSpec(fail_next=1))

    injector = asyncio.create_task(inject())
    step = await run_open(target, prepared.pool, OpenLoop(rate, duration_s, warmup_s=0.0, seed=2))
    injector.cancel()
    await runtime.aclose()
    t = target
    return FaultResult(
        rate,
        slot.fault_counts().failed,
        t.clean,
        t.retried,
        t.clean_overhead,
        t.retried_overhead,
        step.failed,
    )


async def _targets(prepared: Prepared, config: ModelConfig) -> dict[str, tuple[Target, Callable[[], object]]]:
    batched = await _serving(prepared, config)
    single = await _serving(prepared, replace(config, batching=replace(config.batching, max_batch_size=1)))
    engine = prepared.factory(0)()
    bare = EngineTarget(engine, num_instances=config.num_instances, name=prepared.name)

    async def close_bare() -> None:
        await bare.aclose()
        engine.close()

    return {
        f"batching (max {config.batching.max_batch_size})": (
            RuntimeTarget(batched, prepared.name),
            batched.aclose,
        ),
        "one per run (runtime)": (RuntimeTarget(single, prepared.name), single.aclose),
        "one per run (engine)": (bare, close_bare),
    }


async def batching_sweep(
    prepared: Prepared, config: ModelConfig, *, bound_ms: float, start_rate: float, max_rate: float,
    factor: float, step_s: float, warmup_s: float,
) -> dict[str, list[StepResult]]:  # fmt: skip
    """Rising rates, modes interleaved at each rate; a mode stops after two steps over the bound."""
    targets = await _targets(prepared, config)
    steps: dict[str, list[StepResult]] = {mode: [] for mode in targets}
    misses = dict.fromkeys(targets, 0)
    rate = start_rate
    while rate <= max_rate and any(m < 2 for m in misses.values()):
        for mode, (target, _) in targets.items():
            if misses[mode] >= 2:
                continue
            step = await run_open(target, prepared.pool, OpenLoop(round(rate, 1), step_s, warmup_s, seed=3))
            steps[mode].append(step)
            misses[mode] = 0 if within(step, bound_ms) else misses[mode] + 1
        rate *= factor
    for _, close in targets.values():
        await close()  # type: ignore[misc]
    return steps


def within(step: StepResult, bound_ms: float) -> bool:
    return step.failed == 0 and step.ok > 0 and step.summary.p99_ms <= bound_ms
