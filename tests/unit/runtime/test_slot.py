"""ModelSlot on fake engines: real worker threads and a real event loop, no real model."""

from __future__ import annotations

import asyncio
import gc
import threading
import tracemalloc

import numpy as np
import pytest
from runtime_fakes import FakeEngine, eventually, x_rows

from kiln._clock import FakeClock
from kiln.errors import DeadlineExceeded, InvalidInput, ModelNotFound, NotReady
from kiln.runtime import BatchingConfig, FallbackConfig, ModelConfig, ModelSlot, VersionPolicy, VersionState
from kiln.runtime.stats import Counter
from kiln.types import TensorSpec

MiB = 1 << 20


def config(**versions: object) -> ModelConfig:
    return ModelConfig(
        num_instances=2,
        batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=0),
        fallback=FallbackConfig(probe_in_background=False),
        versions=VersionPolicy(**versions),  # type: ignore[arg-type]
    )


async def served_constant(slot: ModelSlot, version: str | None = None) -> float:
    x = x_rows(1)
    result = await slot.infer(x, version=version)
    return float((result.outputs["y"] - x["x"])[0, 0])


def test_memory_returns_to_one_version_after_a_swap() -> None:
    async def main() -> tuple[int, int, int]:
        slot = ModelSlot("m", config())
        await slot.load_version("1", lambda: FakeEngine(1.0, weights_bytes=32 * MiB)).wait(10)
        assert await served_constant(slot) == 1.0
        gc.collect()
        one_version = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        status = await slot.load_version("2", lambda: FakeEngine(2.0, weights_bytes=32 * MiB)).wait(10)
        assert status.state is VersionState.READY
        assert await served_constant(slot) == 2.0
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
        await slot.aclose()
        return one_version, after, peak

    tracemalloc.start()
    try:
        one_version, after, peak = asyncio.run(main())
    finally:
        tracemalloc.stop()
    assert peak - one_version > 24 * MiB  # both versions were resident during the swap
    assert abs(after - one_version) < 4 * MiB  # and the old one was released after it


def test_engine_work_never_runs_on_the_event_loop_thread() -> None:
    engine = FakeEngine(1.0)

    async def main() -> str:
        slot = ModelSlot("m", config())
        await slot.load_version("1", engine).wait(10)
        await asyncio.gather(*(slot.infer(x_rows(1)) for _ in range(20)))
        await slot.aclose()
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert engine.threads
    assert loop_thread not in engine.threads
    assert engine.closed
    assert engine.open_instances == 0


def test_a_slow_load_never_blocks_inference() -> None:
    gate = threading.Event()

    def slow_factory() -> FakeEngine:
        gate.wait(10)
        return FakeEngine(2.0)

    async def main() -> None:
        slot = ModelSlot("m", config())
        await slot.load_version("1", FakeEngine(1.0)).wait(10)
        handle = slot.load_version("2", slow_factory)
        for _ in range(10):
            assert await served_constant(slot) == 1.0
        assert handle.state is VersionState.LOADING
        assert not handle.done()
        gate.set()
        await handle.wait(10)
        assert await served_constant(slot) == 2.0
        await slot.aclose()

    asyncio.run(main())


def test_a_request_in_flight_finishes_on_its_version_while_the_old_version_drains() -> None:
    old = FakeEngine(1.0)

    async def main() -> None:
        slot = ModelSlot("m", config())
        await slot.load_version("1", old).wait(10)
        old.gate = threading.Event()
        warm_runs = old.num_runs
        pinned = asyncio.create_task(slot.infer(x_rows(1)))
        await eventually(lambda: old.num_runs > warm_runs)  # it is running on version 1
        handle = slot.load_version("2", FakeEngine(2.0))
        await eventually(lambda: slot.status().active_version == "2")
        assert await served_constant(slot) == 2.0
        assert not handle.done()
        assert [v.state for v in slot.status().versions] == [VersionState.DRAINING, VersionState.READY]
        old.gate.set()
        assert (await pinned).version == "1"
        assert (await handle.wait(10)).state is VersionState.READY
        assert slot.status().versions[0].state is VersionState.UNLOADED
        await slot.aclose()

    asyncio.run(main())
    assert old.closed
    assert old.open_instances == 0


def test_rollback_is_instant_when_the_previous_version_is_kept() -> None:
    async def main() -> None:
        slot = ModelSlot("m", config(max_loaded_versions=2))
        first = FakeEngine(1.0)
        await slot.load_version("1", first).wait(10)
        await slot.load_version("2", FakeEngine(2.0)).wait(10)
        assert await served_constant(slot, version="1") == 1.0
        created = first.num_created
        status = await slot.rollback().wait(10)
        assert (status.version, status.active) == ("1", True)
        assert first.num_created == created  # not loaded again
        assert await served_constant(slot) == 1.0
        assert slot.stats().model.counter(Counter.ROLLBACKS) == 1
        with pytest.raises(ModelNotFound, match="no earlier version"):
            slot.rollback()
        await slot.aclose()

    asyncio.run(main())


def test_rollback_loads_a_released_version_again_from_its_factory() -> None:
    async def main() -> None:
        slot = ModelSlot("m", config())
        await slot.load_version("1", lambda: FakeEngine(1.0)).wait(10)
        await slot.load_version("2", lambda: FakeEngine(2.0)).wait(10)
        status = await slot.rollback().wait(10)
        assert (status.version, status.state) == ("1", VersionState.READY)
        assert await served_constant(slot) == 1.0
        await slot.aclose()

    asyncio.run(main())


def test_rollback_to_a_released_engine_object_fails_with_the_fix() -> None:
    async def main() -> None:
        slot = ModelSlot("m", config())
        await slot.load_version("1", FakeEngine(1.0)).wait(10)
        await slot.load_version("2", FakeEngine(2.0)).wait(10)
        status = await slot.rollback().wait(10)
        assert status.state is VersionState.FAILED
        assert status.reason is not None
        assert "factory" in status.reason
        assert await served_constant(slot) == 2.0
        await slot.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("engine", "words"),
    [
        (FakeEngine(max_batch_size=4), "engine max_batch_size 4 < model max_batch_size 8"),
        (
            FakeEngine(inputs=(TensorSpec("x", "FP32", (1, 4)),), outputs=(TensorSpec("y", "FP32", (1, 4)),)),
            "no batch axis",
        ),
        (
            FakeEngine(create_errors=[RuntimeError("out of memory")]),
            "warm-up failed: RuntimeError: out of memory",
        ),
        (FakeEngine(output_fn=lambda x: {"y": x["x"][:, :2].copy()}), "check failed"),
    ],
)
def test_a_version_that_cannot_serve_fails_with_its_reason(engine: FakeEngine, words: str) -> None:
    async def main() -> None:
        slot = ModelSlot("m", config())
        await slot.load_version("1", FakeEngine(1.0)).wait(10)
        status = await slot.load_version("2", engine).wait(10)
        assert status.state is VersionState.FAILED
        assert status.reason is not None
        assert words in status.reason
        assert await served_constant(slot) == 1.0
        assert slot.status().versions[-1].reason == status.reason
        assert slot.stats().model.counter(Counter.LOAD_FAILURES) == 1
        await slot.aclose()

    asyncio.run(main())
    assert engine.closed


def test_unload_stops_serving() -> None:
    async def main() -> None:
        slot = ModelSlot("m", config())
        with pytest.raises(NotReady, match="no active version"):
            await slot.infer(x_rows(1))
        await slot.load_version("1", FakeEngine(1.0)).wait(10)
        assert slot.is_ready()
        status = await slot.unload().wait(10)
        assert status.state is VersionState.UNLOADED
        assert not slot.is_ready()
        with pytest.raises(NotReady):
            await slot.infer(x_rows(1))
        await slot.aclose()

    asyncio.run(main())


def test_bad_input_is_refused_before_the_engine() -> None:
    engine = FakeEngine(1.0)

    async def main() -> None:
        slot = ModelSlot("m", config())
        await slot.load_version("1", engine).wait(10)
        runs = engine.num_runs
        for bad in (
            {"x": np.zeros((1, 5), np.float32)},
            {"x": np.zeros((1, 4), np.float64)},
            {"z": np.zeros((1, 4), np.float32)},
            {"x": [[0.0] * 4]},
            {"x": np.zeros((9, 4), np.float32)},
        ):
            with pytest.raises(InvalidInput):
                await slot.infer(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="timeout_s"):
            await slot.infer(x_rows(1), timeout_s=0)
        assert engine.num_runs == runs
        assert slot.stats().model.failures["InvalidInput"] == 6
        await slot.aclose()

    asyncio.run(main())


def test_an_expired_request_never_reaches_the_engine() -> None:
    clock = FakeClock()
    engine = FakeEngine(1.0)
    slow = ModelConfig(
        batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=50_000_000, dispatch_when_idle=False),
        fallback=FallbackConfig(probe_in_background=False),
    )

    async def main() -> None:
        slot = ModelSlot("m", slow, clock=clock)
        await slot.load_version("1", engine).wait(10)
        runs = engine.num_runs
        task = asyncio.create_task(slot.infer(x_rows(1), timeout_s=1.0))
        await eventually(lambda: slot.batcher.queue_size == 1)
        clock.advance(2.0)
        slot.batcher.wake()
        with pytest.raises(DeadlineExceeded):
            await task
        assert engine.num_runs == runs
        assert slot.stats().model.failures == {"DeadlineExceeded": 1}
        await slot.aclose()

    asyncio.run(main())


def test_a_drain_is_bounded_and_fails_what_is_still_queued_for_the_old_version() -> None:
    clock = FakeClock()
    held = ModelConfig(
        batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=50_000_000, dispatch_when_idle=False),
        fallback=FallbackConfig(probe_in_background=False),
        versions=VersionPolicy(drain_timeout_s=0.05),
    )
    old = FakeEngine(1.0)

    async def main() -> None:
        slot = ModelSlot("m", held, clock=clock)
        await slot.load_version("1", old).wait(10)
        stuck = asyncio.create_task(slot.infer(x_rows(1)))
        await eventually(lambda: slot.batcher.queue_size == 1)
        status = await slot.load_version("2", FakeEngine(2.0)).wait(10)
        assert status.state is VersionState.READY
        with pytest.raises(NotReady, match="version 1 of 'm' was released"):
            await stuck
        assert slot.status().versions[0].state is VersionState.UNLOADED
        await slot.aclose()

    asyncio.run(main())
    assert old.closed


def test_rollback_history_only_keeps_what_it_can_use() -> None:
    async def main() -> None:
        slot = ModelSlot("m", config(rollback_depth=2))
        for version in ("1", "2", "3", "4"):
            await slot.load_version(version, lambda: FakeEngine(1.0)).wait(10)
        assert (await slot.rollback().wait(10)).version == "3"
        with pytest.raises(ModelNotFound):
            slot.rollback()
        await slot.aclose()

    asyncio.run(main())


def test_admitted_shapes_are_remembered_without_admitting_bad_inputs() -> None:
    engine = FakeEngine(1.0)

    class Shaped:
        """Looks like a (1, 4) float32 array to a careless check, but is no numpy array."""

        dtype = np.dtype(np.float32)
        shape = (1, 4)

    async def main() -> None:
        slot = ModelSlot("m", config())
        await slot.load_version("1", engine).wait(10)
        for _ in range(3):  # the first admits (1, 4) float32, the next ones take the remembered path
            result = await slot.infer(x_rows(1))
            assert result.outputs["y"].shape == (1, 4)
        runs = engine.num_runs
        for bad in (
            {"x": np.zeros((1, 4), np.float64)},
            {"x": Shaped()},
            {"x": np.zeros((1, 4), np.float32), "extra": np.zeros((1, 4), np.float32)},
            {"z": np.zeros((1, 4), np.float32)},
        ):
            with pytest.raises(InvalidInput):
                await slot.infer(bad)  # type: ignore[arg-type]
        assert engine.num_runs == runs
        await slot.aclose()

    asyncio.run(main())
