"""Admission on real ONNX Runtime engines: load shedding, deadlines, cancellation, bad input,
explicit versions. A fake clock holds requests in the queue; nothing sleeps."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from runtime_engines import CountingEngine, EngineBuilder, add_model, rows
from runtime_harness import config

from kiln._clock import FakeClock
from kiln.errors import DeadlineExceeded, InvalidInput, ModelNotFound, Overloaded
from kiln.runtime import ModelSlot, Runtime
from kiln.runtime.stats import Counter

HOLD_US = 60_000_000  # a queue delay the fake clock only passes when told to (idle dispatch off)


async def loaded(
    build: EngineBuilder, clock: FakeClock, **overrides: int
) -> tuple[Runtime, ModelSlot, CountingEngine]:
    runtime = Runtime(clock=clock)
    model = runtime.add_model("ctr", config(**overrides))
    engine = build(add_model(1.0))
    await runtime.load_version("ctr", "1", engine).wait(30)
    return runtime, model, engine


async def queued(model: ModelSlot, count: int) -> None:
    for _ in range(1000):
        if model.batcher.queue_size == count:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"queue never reached {count}")


def test_a_full_queue_rejects_at_once_and_the_queued_requests_still_run(build: EngineBuilder) -> None:
    clock = FakeClock()

    async def main() -> None:
        runtime, model, engine = await loaded(
            build, clock, delay_us=HOLD_US, dispatch_when_idle=False, max_queue_size=4
        )
        waiting = [asyncio.create_task(runtime.infer("ctr", rows(1, seed=s))) for s in range(4)]
        await queued(model, 4)
        with pytest.raises(Overloaded, match="max_queue_size 4"):
            await runtime.infer("ctr", rows(1))
        runs = engine.num_runs
        clock.advance(HOLD_US / 1e6)
        model.batcher.wake()
        results = await asyncio.gather(*waiting)
        assert engine.num_runs == runs + 1  # the four ran as one batch
        assert {r.batch_rows for r in results} == {4}
        assert model.stats().model.failures == {"Overloaded": 1}
        await runtime.aclose()

    asyncio.run(main())


def test_an_expired_request_gets_deadline_exceeded_and_the_engine_is_not_called(build: EngineBuilder) -> None:
    clock = FakeClock()

    async def main() -> None:
        runtime, model, engine = await loaded(build, clock, delay_us=HOLD_US, dispatch_when_idle=False)
        runs = engine.num_runs
        late = asyncio.create_task(runtime.infer("ctr", rows(1), timeout_s=0.5))
        await queued(model, 1)
        clock.advance(1.0)
        model.batcher.wake()
        with pytest.raises(DeadlineExceeded, match="deadline"):
            await late
        assert engine.num_runs == runs
        assert model.batcher.queue_size == 0
        await runtime.aclose()

    asyncio.run(main())


def test_a_cancelled_request_is_dropped_before_the_engine_sees_it(build: EngineBuilder) -> None:
    clock = FakeClock()

    async def main() -> None:
        runtime, model, _ = await loaded(build, clock, delay_us=HOLD_US, dispatch_when_idle=False)
        gone = asyncio.create_task(runtime.infer("ctr", rows(3)))
        kept = asyncio.create_task(runtime.infer("ctr", rows(1)))
        await queued(model, 2)
        gone.cancel()
        await queued(model, 1)
        clock.advance(HOLD_US / 1e6)
        model.batcher.wake()
        result = await kept
        assert result.batch_rows == 1
        assert model.stats().model.failures == {"Cancelled": 1}
        await runtime.aclose()

    asyncio.run(main())


def test_onnxruntime_runs_a_batch_above_the_preferred_sizes_on_its_rows(build: EngineBuilder) -> None:
    clock = FakeClock()

    async def main() -> None:
        runtime, _, engine = await loaded(build, clock, delay_us=0, preferred=(4,), max_batch_size=8)
        assert engine.prepares_per_shape is False
        x = rows(6, seed=3)
        result = await runtime.infer("ctr", x)
        assert result.batch_rows == 6  # not padded to max_batch_size 8: ONNX Runtime runs any size
        np.testing.assert_allclose(result.outputs["y"], x["x"] + 1.0, atol=1e-6)
        assert runtime.model("ctr").stats().model.padding_rows == 0
        await runtime.aclose()

    asyncio.run(main())


def test_padding_to_a_preferred_size_is_sliced_off_the_results(build: EngineBuilder) -> None:
    clock = FakeClock()

    async def main() -> None:
        runtime, _, _ = await loaded(build, clock, delay_us=0, preferred=(4,))
        x = rows(3, seed=9)
        result = await runtime.infer("ctr", x)
        assert result.batch_rows == 4
        np.testing.assert_allclose(result.outputs["y"], x["x"] + 1.0, atol=1e-6)
        assert runtime.model("ctr").stats().model.padding_rows == 1
        await runtime.aclose()

    asyncio.run(main())


def test_bad_input_is_refused_naming_the_problem_and_never_retried(build: EngineBuilder) -> None:
    clock = FakeClock()

    async def main() -> None:
        runtime, model, engine = await loaded(build, clock, delay_us=0)
        runs = engine.num_runs
        with pytest.raises(InvalidInput, match="'x' has shape"):
            await runtime.infer("ctr", {"x": np.zeros((1, 5), np.float32)})
        with pytest.raises(InvalidInput, match="9 rows"):
            await runtime.infer("ctr", rows(9))
        assert engine.num_runs == runs
        assert model.stats().model.counter(Counter.RETRIES) == 0
        await runtime.aclose()

    asyncio.run(main())


def test_requests_can_name_a_kept_version_and_unknown_names_are_refused(build: EngineBuilder) -> None:
    async def main() -> None:
        runtime = Runtime()
        runtime.add_model("ctr", config(keep=2))
        await runtime.load_version("ctr", "1", lambda: build(add_model(1.0))).wait(30)
        await runtime.load_version("ctr", "2", lambda: build(add_model(2.0))).wait(30)
        x = rows(1)
        old = await runtime.infer("ctr", x, version="1")
        new = await runtime.infer("ctr", x)
        np.testing.assert_allclose(old.outputs["y"] + 1.0, new.outputs["y"], atol=1e-6)
        assert (old.version, new.version) == ("1", "2")
        with pytest.raises(ModelNotFound, match="ready versions: \\['1', '2'\\]"):
            await runtime.infer("ctr", x, version="3")
        with pytest.raises(ModelNotFound, match="known models"):
            await runtime.infer("other", x)
        await runtime.aclose()

    asyncio.run(main())
