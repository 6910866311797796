"""Recovery on real ONNX Runtime engines, proven with injected faults: retries on rebuilt
instances, failover to the CPU fallback engine and back, liveness."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from runtime_engines import EngineBuilder, add_model, rows
from runtime_harness import Load, config

from kiln._clock import FakeClock
from kiln.errors import EngineDead
from kiln.runtime import FaultSpec, Health, Route, Runtime, VersionState
from kiln.runtime.stats import Counter


def test_injected_transient_faults_never_reach_the_caller(build: EngineBuilder) -> None:
    async def main() -> None:
        runtime = Runtime()
        model = runtime.add_model("ctr", config(max_retries=10))
        await runtime.load_version("ctr", "1", lambda: build(add_model(1.0))).wait(30)
        model.set_faults(FaultSpec(fail_next=3, kill_next=1, fail_fraction=0.15, seed=7))
        async with Load(runtime, "ctr", {"1": 1.0}, num_threads=1) as load:
            await load.until_served("1", count=300)
        assert load.problems == []
        faults = model.fault_counts()
        assert faults.failed >= 3
        assert faults.killed == 1
        stats = model.stats().model
        assert stats.counter(Counter.RETRIES) >= faults.failed + faults.killed
        assert stats.counter(Counter.INSTANCE_REBUILDS) >= faults.failed + faults.killed
        assert stats.fail.count == 0
        assert model.is_live()
        await runtime.aclose()

    asyncio.run(main())


def test_slow_runs_still_answer_correctly(build: EngineBuilder) -> None:
    async def main() -> None:
        runtime = Runtime()
        model = runtime.add_model("ctr", config())
        await runtime.load_version("ctr", "1", lambda: build(add_model(1.0))).wait(30)
        model.set_faults(FaultSpec(delay_ms=5))
        async with Load(runtime, "ctr", {"1": 1.0}, num_threads=1) as load:
            await load.until_served("1", count=20)
        assert load.problems == []
        assert model.fault_counts().delayed >= 1
        await runtime.aclose()

    asyncio.run(main())


def test_a_dead_primary_fails_over_to_the_cpu_fallback_and_back(build: EngineBuilder) -> None:
    clock = FakeClock()
    primary = build(add_model(1.0))
    fallback = build(add_model(1.0))

    async def main() -> None:
        runtime = Runtime(clock=clock)
        model = runtime.add_model("ctr", config(delay_us=0))
        await runtime.load_version("ctr", "1", primary, fallback=fallback).wait(30)
        assert (await runtime.infer("ctr", rows(1))).route == "primary"

        model.set_faults(FaultSpec(dead_next=2))
        x = rows(2, seed=5)
        result = await runtime.infer("ctr", x)
        assert result.route == "fallback"
        np.testing.assert_allclose(result.outputs["y"], x["x"] + 1.0, atol=1e-6)
        assert not runtime.is_live()
        assert runtime.is_ready()
        (version,) = model.status().versions
        assert (version.route, version.primary_health) == ("fallback", "dead")

        primary_runs = primary.num_runs
        results = await asyncio.gather(*(runtime.infer("ctr", rows(1, seed=s)) for s in range(20)))
        assert {r.route for r in results} == {"fallback"}
        assert primary.num_runs == primary_runs  # a dead engine is not called at all

        assert await model.probe() == []  # not due yet
        clock.advance(5.0)
        assert await model.probe() == []  # due, but the primary is still dead
        assert not runtime.is_live()
        clock.advance(5.0)
        (change,) = await model.probe()
        assert (change.previous, change.route, change.health) == (
            Route.FALLBACK,
            Route.PRIMARY,
            Health.HEALTHY,
        )
        assert runtime.is_live()
        assert (await runtime.infer("ctr", rows(1))).route == "primary"

        stats = model.stats().model
        assert stats.counter(Counter.ROUTING_CHANGES) == 2
        assert stats.counter(Counter.FALLBACK_BATCHES) >= 2
        assert stats.counter(Counter.PROBES) == 2
        assert stats.fail.count == 0
        await runtime.aclose()

    asyncio.run(main())
    assert primary.closed
    assert fallback.closed


def test_spent_retries_move_traffic_to_the_fallback_without_losing_liveness(build: EngineBuilder) -> None:
    clock = FakeClock()

    async def main() -> None:
        runtime = Runtime(clock=clock)
        model = runtime.add_model("ctr", config(delay_us=0, max_retries=1))
        await runtime.load_version(
            "ctr", "1", lambda: build(add_model(1.0)), fallback=lambda: build(add_model(1.0))
        ).wait(30)
        model.set_faults(FaultSpec(fail_next=1000))
        result = await runtime.infer("ctr", rows(1))
        assert (result.route, result.retries) == ("fallback", 2)  # two failed runs on the primary
        assert model.status().versions[0].primary_health == "unhealthy"
        assert runtime.is_live()
        model.set_faults(None)
        clock.advance(5.0)
        assert len(await model.probe()) == 1
        assert (await runtime.infer("ctr", rows(1))).route == "primary"
        await runtime.aclose()

    asyncio.run(main())


def test_a_dead_primary_without_fallback_fails_fast_and_recovers_after_a_probe(build: EngineBuilder) -> None:
    clock = FakeClock()

    async def main() -> None:
        runtime = Runtime(clock=clock)
        model = runtime.add_model("ctr", config(delay_us=0))
        await runtime.load_version("ctr", "1", lambda: build(add_model(1.0))).wait(30)
        model.set_faults(FaultSpec(dead_next=1))
        with pytest.raises(EngineDead):
            await runtime.infer("ctr", rows(1))
        with pytest.raises(EngineDead):
            await runtime.infer("ctr", rows(1))
        assert not runtime.is_live()
        assert not runtime.is_ready()
        assert model.stats().model.failures == {"EngineDead": 2}
        clock.advance(5.0)
        await runtime.probe()
        assert runtime.is_live()
        assert (await runtime.infer("ctr", rows(1))).version == "1"
        await runtime.aclose()

    asyncio.run(main())


def test_a_broken_fallback_fails_the_whole_version(build: EngineBuilder) -> None:
    async def main() -> None:
        runtime = Runtime()
        runtime.add_model("ctr", config())
        status = await runtime.load_version(
            "ctr", "1", lambda: build(add_model(1.0)), fallback=lambda: build(add_model(float("inf")))
        ).wait(30)
        assert status.state is VersionState.FAILED
        assert status.reason is not None
        assert "fallback batch 1: output 'y' holds NaN or Inf" in status.reason
        await runtime.aclose()

    asyncio.run(main())
