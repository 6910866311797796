"""From a benchmark description (what the ``kiln bench`` command line says) to a report.

:class:`BenchSetup` names the target: a KServe v2 server (``url``) or an engine run in-process
(``engine``: an ONNX model built through the engine cache, or an artifact folder), served either by
kiln's runtime (dynamic batching) or one request per engine run. :func:`run_setup` builds the
target and the request payloads, runs the :class:`BenchPlan` and returns the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

from kiln.bench.engines import obtain_bench_engine
from kiln.bench.inputs import RequestPool
from kiln.bench.kserve import PROTOCOLS, KServeTarget
from kiln.bench.kserve import Protocol as WireProtocol
from kiln.bench.report import BenchReport
from kiln.bench.runner import BenchPlan, BenchProgress, run_bench
from kiln.bench.targets import EngineTarget, RuntimeTarget, Target
from kiln.compile.spec import PRECISIONS, BuildSpec, Precision
from kiln.errors import ConfigError, describe
from kiln.runtime import BatchingConfig, ModelConfig, Runtime, VersionState
from kiln.types import TensorSpec

Mode: TypeAlias = Literal["runtime", "engine"]
MODES: tuple[Mode, ...] = ("runtime", "engine")


@dataclass(frozen=True)
class BenchSetup:
    """What to measure and with which payloads.

    Attributes:
        url / protocol: a KServe v2 server (``http://HOST:PORT`` or ``HOST:PORT``) and its protocol.
        engine: instead of a server, an ONNX model (built through the engine cache in
            ``cache_dir`` at ``precision``) or an engine artifact folder, run in this process.
        model: the model name (on the server; in-process, a label defaulting to the file's stem).
        mode: in-process only: ``runtime`` (kiln's runtime, dynamic batching up to
            ``max_batch_size`` rows, waiting at most ``max_queue_delay_us``) or ``engine`` (one
            request per engine run, no batching). ``dispatch_when_idle``: the runtime's batching
            setting of that name (run at once when no batch is running).
        num_instances: in-process execution instances (worker threads).
        inputs: an ``.npz`` file or folder of samples; default random payloads from the signature.
        batch_size: rows per request. int_range: the range of random integer inputs (high excluded).
        seed: seed of the random payloads.
    """

    url: str | None = None
    protocol: WireProtocol = "http"
    engine: Path | None = None
    model: str | None = None
    mode: Mode = "runtime"
    num_instances: int = 1
    max_batch_size: int = 32
    max_queue_delay_us: int = 1000
    dispatch_when_idle: bool = True
    precision: Precision = "fp32"
    cache_dir: Path | None = None
    inputs: Path | None = None
    batch_size: int = 1
    int_range: tuple[int, int] = (0, 100)
    seed: int = 0
    plan: BenchPlan = field(default_factory=BenchPlan)

    def __post_init__(self) -> None:
        if (self.url is None) == (self.engine is None):
            raise ConfigError(
                describe(
                    "name exactly one target",
                    seen=f"url={self.url}, engine={self.engine}",
                    fix="give --url (a KServe v2 server) or --engine (a model run in-process)",
                )
            )
        for name, value, allowed in (
            ("--mode", self.mode, MODES),
            ("--protocol", self.protocol, PROTOCOLS),
            ("--precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise ConfigError(
                    describe(f"unknown {name}", seen=value, fix=f"use one of {', '.join(allowed)}")
                )
        if self.url is not None and not self.model:
            raise ConfigError(describe("--model is required with --url", fix="name the served model"))
        if self.precision == "int8":
            raise ConfigError(
                describe(
                    "int8 needs calibration data", fix="build it with kiln build and pass the artifact folder"
                )
            )

    @property
    def model_name(self) -> str:
        if self.model:
            return self.model
        assert self.engine is not None
        return self.engine.stem if self.engine.suffix else self.engine.name


def requests_for(setup: BenchSetup, specs: tuple[TensorSpec, ...]) -> RequestPool:
    """The payloads: rows of the ``inputs`` samples, else random ones fitting ``specs``."""
    if setup.inputs is not None:
        return RequestPool.from_samples(setup.inputs, specs, batch_size=setup.batch_size)
    return RequestPool.random(specs, batch_size=setup.batch_size, seed=setup.seed, int_range=setup.int_range)


async def run_setup(setup: BenchSetup, *, progress: BenchProgress | None = None) -> BenchReport:
    """Build the target ``setup`` names, run its plan, release everything; the report."""
    if setup.url is not None:
        target: Target = KServeTarget(setup.url, setup.model_name, protocol=setup.protocol)
        return await _run(setup, target, progress)
    assert setup.engine is not None
    spec = BuildSpec(precision=setup.precision, max_batch_size=max(setup.max_batch_size, setup.batch_size))
    loaded = obtain_bench_engine(setup.engine, spec=spec, cache_dir=setup.cache_dir)
    if setup.mode == "engine":
        try:
            return await _run(setup, EngineTarget(loaded.engine, num_instances=setup.num_instances), progress)
        finally:
            loaded.engine.close()
    runtime = Runtime()
    name = setup.model_name
    batching = BatchingConfig(
        max_batch_size=setup.max_batch_size,
        max_queue_delay_us=setup.max_queue_delay_us,
        dispatch_when_idle=setup.dispatch_when_idle,
    )
    runtime.add_model(name, ModelConfig(num_instances=setup.num_instances, batching=batching))
    try:
        status = await runtime.load_version(name, "1", loaded.engine).wait()
        if status.state is VersionState.FAILED:
            raise ConfigError(describe(f"the engine for {name!r} could not be served", seen=status.reason))
        return await _run(setup, RuntimeTarget(runtime, name), progress)
    finally:
        await runtime.aclose()


async def _run(setup: BenchSetup, target: Target, progress: BenchProgress | None) -> BenchReport:
    return await run_bench(
        target,
        setup.plan,
        requests=lambda specs: requests_for(setup, specs),
        model=setup.model_name,
        progress=progress,
    )
