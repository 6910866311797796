"""The measurements of ``benchmarks/runtime.py``: engines per version, the swap soak, the fault run,
the batching sweep, and the Markdown summary against the runtime's targets."""

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
SWAP_TARGET = 1.25
FAULT_TARGET_MS = 10.0
BATCHING_TARGET = 3.0


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
    count = 256 if name != "cnn" else 16
    data = examples.make_samples(name, count, kind="validation", size=size, labels=False)  # type: ignore[arg-type]
    inputs = {k: v for k, v in data.items() if not k.startswith("_")}
    pool = RequestPool.from_samples(SampleSet(inputs), examples.EXAMPLES[name].inputs(size))  # type: ignore[arg-type]
    return Prepared(name, artifacts, pool)


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
    prepared: Prepared, config: ModelConfig, *, rate: float, swaps: int, every_s: float
) -> SoakResult:
    """A fixed-rate soak while a new version is loaded every ``every_s``; phases steady/swap."""
    runtime = await _serving(prepared, config)
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
            misses[mode] = 0 if _within(step, bound_ms) else misses[mode] + 1
        rate *= factor
    for _, close in targets.values():
        await close()  # type: ignore[misc]
    return steps


def _within(step: StepResult, bound_ms: float) -> bool:
    return step.failed == 0 and step.ok > 0 and step.summary.p99_ms <= bound_ms


def best_rate(steps: list[StepResult], bound_ms: float) -> StepResult | None:
    """The highest-rate step whose p99 stays under the bound with no failure."""
    good = [s for s in steps if _within(s, bound_ms)]
    return max(good, key=lambda s: s.rate_per_s or 0.0, default=None)


SWAP_HEADER = (
    "| model | rate/s | swaps (every s) | steady p50 / p99 ms | swap-window p50 / p99 ms | p99 ratio "
    "| failed | target |"
)
FAULT_HEADER = (
    "| model | rate/s | faults | retried requests | latency p50 clean / retried ms | overhead p50 clean ms "
    "| overhead retried p50 / max ms | added p50 / max ms | failed | target |"
)


def _fault_met(f: FaultResult) -> bool:
    return f.retried.count > 0 and f.added_max_ms <= FAULT_TARGET_MS and f.failed == 0


def _yes(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def summarize(outcomes: list[Outcome], machine: str, started: str, command: str) -> str:
    lines = [f"Command: `{command}`  ", f"Machine: {machine}  ", f"Started: {started}", ""]
    lines += ["### Hot swap under load", "", SWAP_HEADER, "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        for variant, soak in o.swaps.items():
            lines.append(_swap_row(o.model, variant, soak, o.swap_every_s))
    lines += ["", "### One injected transient fault", "", FAULT_HEADER, "|---" * 10 + "|"]
    for o in outcomes:
        f = o.fault
        if f is None:
            continue
        lines.append(
            f"| {o.model} | {f.rate:g} | {f.faults} | {f.retried.count} | {f.clean.percentile_ms(50):.2f} / "
            f"{f.retried.percentile_ms(50):.2f} | {f.clean_overhead.percentile_ms(50):.2f} | "
            f"{f.retried_overhead.percentile_ms(50):.2f} / {f.retried_overhead.max_ns / 1e6:.2f} | "
            f"{f.added_p50_ms:.2f} / {f.added_max_ms:.2f} | {f.failed} | {_yes(_fault_met(f))} |"
        )
    lines += ["", "### Dynamic batching vs one request per run (highest rate with p99 under the bound)", ""]
    lines += [
        "| model | p99 bound ms | mode | best rate/s | achieved req/s | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        for mode, steps in o.sweeps.items():
            best = best_rate(steps, o.bound_ms)
            cells = ("-", "-", "-")
            if best is not None:
                cells = (f"{best.rate_per_s:g}", f"{best.throughput_per_s:.1f}", f"{best.summary.p99_ms:.2f}")
            lines.append(f"| {o.model} | {o.bound_ms:g} | {mode} | {' | '.join(cells)} |")
    lines += ["", *_ratios(outcomes)]
    return "\n".join(lines) + "\n"


def _swap_row(model: str, variant: str, soak: SoakResult, every_s: float) -> str:
    steady, swap = soak.phases.get("steady"), soak.phases.get("swap")
    swaps = sum(1 for m in soak.markers if m.kind == "released")
    if steady is None or swap is None:
        rate, failed = soak.step.rate_per_s, soak.step.failed
        return f"| {model} ({variant}) | {rate:g} | {swaps} ({every_s:g}) | - | - | - | {failed} | - |"
    ratio = swap.summary.p99_ms / steady.summary.p99_ms if steady.summary.p99_ms else float("inf")
    failed = soak.step.failed
    return (
        f"| {model} ({variant}) | {soak.step.rate_per_s:g} | {swaps} ({every_s:g}) | "
        f"{steady.summary.p50_ms:.2f} / {steady.summary.p99_ms:.2f} | "
        f"{swap.summary.p50_ms:.2f} / {swap.summary.p99_ms:.2f} | "
        f"{ratio:.2f} | {failed} | {_yes(ratio <= SWAP_TARGET and failed == 0)} |"
    )


def _ratios(outcomes: list[Outcome]) -> list[str]:
    lines = []
    for o in outcomes:
        rates = {mode: best_rate(steps, o.bound_ms) for mode, steps in o.sweeps.items()}
        batched = next((s for m, s in rates.items() if m.startswith("batching")), None)
        for mode, single in rates.items():
            if mode.startswith("batching") or batched is None or single is None:
                continue
            ratio = batched.throughput_per_s / single.throughput_per_s
            met = _yes(ratio >= BATCHING_TARGET) if o.model == "cnn" else "(no target)"
            lines.append(f"- {o.model}: batching / {mode} = {ratio:.2f}x {met}")
    return lines
