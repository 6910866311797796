"""Building, loading and timing kiln torch engines inside the benchmark."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _record import Recorder
from _timing import accuracy, iterations, time_concurrent, time_device, time_wall

from kiln.compile.artifact import write_manifest
from kiln.compile.backends.base import EngineArtifact
from kiln.compile.backends.torch import TorchBackend
from kiln.compile.backends.torch.engine import TorchEngine, TorchInstance
from kiln.compile.spec import BuildSpec
from kiln.model.source import ModelSource


def build(
    record: Recorder, model: str, backend: TorchBackend, *, source: ModelSource, spec: BuildSpec, folder: Path
) -> EngineArtifact:
    """A full build (cold compile when the stage's compile caches are fresh), timed and recorded."""
    started = time.perf_counter()
    output = backend.build(source, spec, folder)
    seconds = time.perf_counter() - started
    artifact = write_manifest(
        folder,
        key=f"bench-{model}",
        source=source,
        spec=spec,
        target=backend.target(),
        output=output,
        build_seconds=seconds,
    )
    record(
        "build",
        model=model,
        path="build",
        seconds=round(seconds, 2),
        compile_seconds=output.extra.get("compile_seconds"),
        per_bucket=output.extra.get("compile_seconds_per_bucket"),
        cache_counters=output.extra.get("compile_cache_counters"),
        compile_cache_bytes=output.extra.get("compile_cache_bytes"),
        weights_bytes=output.extra.get("weights_bytes"),
        precision=spec.precision,
    )
    return artifact


def load(
    record: Recorder, model: str, backend: TorchBackend, artifact: EngineArtifact, what: str
) -> TorchEngine:
    started = time.perf_counter()
    engine = backend.load(artifact)
    record(
        "load",
        model=model,
        what=what,
        seconds=round(time.perf_counter() - started, 4),
        report=engine.load_report,
    )
    return engine


def instance(record: Recorder, model: str, engine: TorchEngine, what: str) -> TorchInstance:
    started = time.perf_counter()
    created = engine.create_instance()
    record(
        "instance",
        model=model,
        what=what,
        seconds=round(time.perf_counter() - started, 4),
        device_bytes=created.runner.device_bytes,
        host_pinned_bytes=created.runner.host_bytes,
        engine_memory_bytes=engine.memory_bytes(),
    )
    return created


def run_chunks(
    inst: TorchInstance, feeds: dict[str, np.ndarray[Any, Any]], chunk: int
) -> dict[str, np.ndarray[Any, Any]]:
    rows = len(next(iter(feeds.values())))
    parts: list[dict[str, np.ndarray[Any, Any]]] = []
    for start in range(0, rows, chunk):
        parts.append(inst.run({k: v[start : start + chunk] for k, v in feeds.items()}))
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def check(
    record: Recorder, model: str, variant: str, candidate: Any, reference: Any, **extra: Any
) -> dict[str, float]:
    result = accuracy(candidate, reference)
    record("accuracy", model=model, variant=variant, **result, **extra)
    return result


def time_engine(
    record: Recorder,
    model: str,
    inst: TorchInstance,
    *,
    feeds_for: Any,
    batches: Sequence[int],
    smoke: bool,
    variant: str = "kiln torch engine",
) -> None:
    """Per bucket: in-engine (graph replay on device-resident inputs) and host round trip."""
    for batch in batches:
        feed = feeds_for(batch)
        inst.run(feed)  # warms the bucket and leaves its inputs on the device
        warmup, iters = iterations(batch, smoke)
        runner = inst.runner
        if hasattr(runner, "stream"):
            timing = time_device(
                lambda b=batch, r=runner: r.replay(b), batch, warmup=warmup, iters=iters, stream=runner.stream
            )
            record(
                "timing", model=model, variant=variant, scope="in-engine (graph replay)", **timing.to_json()
            )
        host = time_wall(lambda f=feed: inst.run(f), batch, warmup=warmup, iters=iters)
        record(
            "timing", model=model, variant=variant, scope="host round trip (instance.run)", **host.to_json()
        )


def time_instances(
    record: Recorder,
    model: str,
    instances: Sequence[TorchInstance],
    *,
    feed: dict[str, Any],
    batch: int,
    seconds: float,
) -> None:
    calls = [lambda i=i: i.run(feed) for i in instances]
    result = time_concurrent(calls, batch, seconds)
    record(
        "timing",
        model=model,
        variant="kiln torch engine",
        scope=f"{len(instances)} instances concurrently (instance.run)",
        **result.to_json(),
    )
