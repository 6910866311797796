"""The gate's measurements on the built engine, in-process: outputs for the accuracy checks, one
open-loop step for the p99 check, and closed-loop sweeps of kiln's runtime and the unoptimized
baseline for the speedup check. A step in which every request fails is returned like any other
(the checks report it); nothing here decides pass or fail."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.bench.efficiency import Capacity, capacity_at
from kiln.bench.inputs import RequestPool
from kiln.bench.load import ClosedLoop, OpenLoop, run_closed, run_open
from kiln.bench.peers.ort import UnoptimizedTarget
from kiln.bench.results import StepResult
from kiln.bench.targets import RuntimeTarget, Target
from kiln.compile.accuracy import run_batches
from kiln.compile.backends.base import Engine
from kiln.compile.data import SampleSet
from kiln.errors import ConfigError, describe
from kiln.gate.config import GateConfig, GateLoad
from kiln.runtime import BatchingConfig, ModelConfig, Runtime, VersionState
from kiln.types import Array, TensorSpec


@dataclass(frozen=True)
class LoadMeasurements:
    """What the load steps measured: the p99 step, and each variant's closed-loop steps."""

    p99_step: StepResult
    kiln_steps: tuple[StepResult, ...]
    baseline_steps: tuple[StepResult, ...]
    kiln: Capacity
    baseline: Capacity


def engine_outputs(engine: Engine, samples: SampleSet, batch_size: int) -> dict[str, Array]:
    """The engine's outputs for ``samples``, run in batches on one instance."""
    instance = engine.create_instance()
    try:
        return run_batches(instance.run, samples, batch_size)
    finally:
        instance.close()


def request_pool(config: GateConfig, specs: tuple[TensorSpec, ...]) -> RequestPool:
    if config.validation is not None:
        return RequestPool.from_samples(config.validation, specs, batch_size=1)
    return RequestPool.random(specs, batch_size=1, seed=0, int_range=config.load.int_range)


async def measure_load(config: GateConfig, engine: Engine, pool: RequestPool) -> LoadMeasurements:
    """Serve ``engine`` with kiln's runtime, run the p99 step and kiln's sweep, then the baseline's
    sweep on the candidate model file. The runtime takes over ``engine`` (closed with it)."""
    load = config.load
    runtime = Runtime()
    name = config.model_name
    batching = BatchingConfig(max_batch_size=load.max_batch_size, max_queue_delay_us=load.max_queue_delay_us)
    runtime.add_model(name, ModelConfig(num_instances=load.num_instances, batching=batching))
    try:
        status = await runtime.load_version(name, "1", engine).wait()
        if status.state is VersionState.FAILED:
            raise ConfigError(describe(f"the engine for {name!r} could not be served", seen=status.reason))
        target = RuntimeTarget(runtime, name)
        p99_step = await run_open(
            target, pool, OpenLoop(load.load_rate_per_s, load.duration_s, load.warmup_s)
        )
        kiln_steps = await sweep(target, pool, load)
    finally:
        await runtime.aclose()
    baseline_steps = await sweep(UnoptimizedTarget(Path(config.model)), pool, load, opened=False)
    bound = config.speedup_bound_ms
    return LoadMeasurements(
        p99_step,
        kiln_steps,
        baseline_steps,
        capacity_at("kiln", kiln_steps, bound),
        capacity_at("unoptimized", baseline_steps, bound),
    )


async def sweep(
    target: Target, pool: RequestPool, load: GateLoad, *, opened: bool = True
) -> tuple[StepResult, ...]:
    """One closed-loop step per concurrency; the target is opened here unless ``opened``."""
    if not opened:
        await target.open()
    try:
        return tuple(
            [
                await run_closed(target, pool, ClosedLoop(c, load.duration_s, load.warmup_s))
                for c in load.concurrency
            ]
        )
    finally:
        if not opened:
            await target.aclose()
