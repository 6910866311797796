"""Hot swap on real ONNX Runtime engines under continuous load from many tasks and threads."""

from __future__ import annotations

import asyncio

import numpy as np
from runtime_engines import CountingEngine, EngineBuilder, add_model, nan_model, reshape_model, rows
from runtime_harness import Engines, Load, config

from kiln.runtime import GoldenSet, Runtime, VersionState
from kiln.runtime.stats import Counter

CONSTANTS = {"1": 1.0, "2": 2.0, "3": 3.0, "4": 4.0}


def test_swaps_under_load_fail_no_request_and_answer_from_the_pinned_version(build: EngineBuilder) -> None:
    engines = Engines(build)

    async def main() -> None:
        runtime = Runtime()
        runtime.add_model("ctr", config(preferred=(4,)))
        await runtime.load_version("ctr", "1", engines.factory("1", 1.0)).wait(30)
        async with Load(runtime, "ctr", CONSTANTS, num_tasks=12, num_threads=2) as load:
            await load.until_served("1")
            for version in ("2", "3", "4"):
                factory = engines.factory(version, CONSTANTS[version])
                status = await runtime.load_version("ctr", version, factory).wait(30)
                assert status.state is VersionState.READY
                await load.until_served(version)
        assert load.problems == []
        assert set(load.served) == set(CONSTANTS)
        model = runtime.model("ctr")
        stats = model.stats().model
        assert stats.success.count == load.total
        assert stats.fail.count == 0
        assert stats.counter(Counter.SWAPS) == 3
        assert stats.execution_count < stats.success.count  # requests were batched
        states = {v.version: v.state for v in model.status().versions}
        assert states == {
            "1": VersionState.UNLOADED,
            "2": VersionState.UNLOADED,
            "3": VersionState.UNLOADED,
            "4": VersionState.READY,
        }
        await runtime.aclose()

    asyncio.run(main())
    for version in ("1", "2", "3", "4"):
        (engine,) = engines.made[version]
        assert engine.closed
        assert engine.open_instances == 0


def test_broken_versions_never_serve_and_the_active_one_keeps_serving(build: EngineBuilder) -> None:
    def load_error() -> CountingEngine:
        raise OSError("engine file is truncated")

    golden = GoldenSet(rows(3, 42), {"y": rows(3, 42)["x"] + np.float32(2.0)})

    async def main() -> None:
        runtime = Runtime()
        runtime.add_model("ctr", config())
        await runtime.load_version("ctr", "1", lambda: build(add_model(1.0))).wait(30)
        broken = {
            "nan": (lambda: build(nan_model()), None, "NaN or Inf"),
            "missing": (load_error, None, "load failed: OSError: engine file is truncated"),
            "reshaping": (lambda: build(reshape_model()), None, "warm-up failed"),
            "drifted": (lambda: build(add_model(5.0)), golden, "golden output 'y' differs"),
        }
        async with Load(runtime, "ctr", {"1": 1.0}, num_threads=1) as load:
            for name, (factory, gold, words) in broken.items():
                status = await runtime.load_version("ctr", name, factory, golden=gold).wait(30)
                assert status.state is VersionState.FAILED, name
                assert status.reason is not None, name
                assert words in status.reason
                assert not status.active
            await load.until_served("1", count=50)
        assert load.problems == []
        assert set(load.served) == {"1"}
        model = runtime.model("ctr")
        assert model.status().active_version == "1"
        assert model.stats().model.counter(Counter.LOAD_FAILURES) == 4
        good = await runtime.load_version("ctr", "2", lambda: build(add_model(2.0)), golden=golden).wait(30)
        assert good.state is VersionState.READY
        await runtime.aclose()

    asyncio.run(main())


def test_rollback_under_load_returns_to_the_previous_version(build: EngineBuilder) -> None:
    engines = Engines(build)

    async def main() -> None:
        runtime = Runtime()
        runtime.add_model("ctr", config(keep=2))
        await runtime.load_version("ctr", "1", engines.factory("1", 1.0)).wait(30)
        await runtime.load_version("ctr", "2", engines.factory("2", 2.0)).wait(30)
        async with Load(runtime, "ctr", CONSTANTS, num_threads=1) as load:
            await load.until_served("2")
            status = await runtime.rollback("ctr").wait(30)
            assert (status.version, status.active, status.state) == ("1", True, VersionState.READY)
            load.served.clear()
            await load.until_served("1", count=50)
        assert load.problems == []
        assert load.served["1"] >= 50
        assert len(engines.made["1"]) == 1  # kept loaded: the rollback loaded nothing
        result = await runtime.infer("ctr", rows(1), version="2")
        assert result.version == "2"
        await runtime.aclose()

    asyncio.run(main())


def test_an_onnxruntime_version_warms_up_on_batch_one_and_is_still_checked(build: EngineBuilder) -> None:
    async def main() -> None:
        runtime = Runtime()
        runtime.add_model("ctr", config(num_instances=2, preferred=(4,), max_batch_size=8))
        engine = build(add_model(1.0))
        assert (await runtime.load_version("ctr", "1", engine).wait(30)).state is VersionState.READY
        assert engine.num_runs == 2  # one batch-1 run per instance, not 1, 4 and 8
        broken = await runtime.load_version("ctr", "2", build(nan_model())).wait(30)
        assert broken.state is VersionState.FAILED
        assert broken.reason == "check failed: primary batch 1: output 'y' holds NaN or Inf"
        await runtime.aclose()

    asyncio.run(main())
