"""The asyncio batcher with a fake runner and a fake clock: the loop does what the plan says."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np
import pytest
from runtime_fakes import eventually, x_rows

from kiln._clock import FakeClock
from kiln.errors import DeadlineExceeded, EngineFailed, NotReady, Overloaded
from kiln.runtime.batching.batcher import Batcher, BatchOutcome, Served
from kiln.runtime.batching.policy import BatchLimits
from kiln.runtime.config import BatchingConfig
from kiln.types import Tensors

KEY = ((4,),)


class FakeRunner:
    def __init__(self, load_id: int = 1, capacity: int = 1, pad_sizes: tuple[int, ...] = ()) -> None:
        self.load_id, self.capacity, self.pad_sizes = load_id, capacity, pad_sizes
        self.calls: list[tuple[int, int]] = []
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def run_batch(
        self, parts: Sequence[Tensors], row_counts: Sequence[int], padded_rows: int, deadline_s: float | None
    ) -> BatchOutcome:
        self.calls.append((len(parts), padded_rows))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return BatchOutcome([{"y": p["x"] + 1} for p in parts], "primary", 0, 1, 2, 3)


def batcher(
    clock: FakeClock,
    *,
    delay_us: int = 10_000_000,
    max_queue_size: int = 16,
    max_batch_size: int = 8,
    when_idle: bool = False,
) -> Batcher:
    config = BatchingConfig(
        max_batch_size=max_batch_size,
        max_queue_delay_us=delay_us,
        max_queue_size=max_queue_size,
        dispatch_when_idle=when_idle,
    )
    return Batcher("m", BatchLimits.from_config(config), max_queue_size=max_queue_size, clock=clock)


def submit(
    b: Batcher,
    runner: FakeRunner,
    clock: FakeClock,
    *,
    rows: int = 1,
    timeout_s: float | None = None,
    priority: int = 0,
) -> tuple[int, asyncio.Future[Served]]:
    now = clock.now()
    return b.submit(
        runner, x_rows(rows, start=now), key=(runner.load_id, KEY), rows=rows, priority=priority,
        arrival_s=now, deadline_s=None if timeout_s is None else now + timeout_s,
    )  # fmt: skip


def test_requests_wait_for_the_delay_then_run_as_one_batch() -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner()
        b = batcher(clock)
        futures = [submit(b, runner, clock)[1] for _ in range(3)]
        await asyncio.sleep(0)
        assert runner.calls == []
        clock.advance(10.0)
        b.wake()
        served = await asyncio.gather(*futures)
        assert runner.calls == [(3, 3)]
        assert [s.index for s in served] == [0, 1, 2]
        assert served[0].outcome.outputs[0]["y"].shape == (1, 4)
        await b.aclose(NotReady("bye"))

    asyncio.run(main())


def test_a_full_queue_rejects_at_once() -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner()
        b = batcher(clock, max_queue_size=2)
        submit(b, runner, clock)
        submit(b, runner, clock)
        with pytest.raises(Overloaded, match="max_queue_size 2"):
            submit(b, runner, clock)
        await b.aclose(NotReady("bye"))

    asyncio.run(main())


def test_an_expired_request_fails_without_reaching_the_runner() -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner()
        b = batcher(clock)
        _, future = submit(b, runner, clock, timeout_s=1.0)
        await asyncio.sleep(0)
        clock.advance(2.0)
        b.wake()
        with pytest.raises(DeadlineExceeded, match="deadline"):
            await future
        assert runner.calls == []
        assert b.queue_size == 0
        await b.aclose(NotReady("bye"))

    asyncio.run(main())


def test_a_cancelled_request_is_dropped_before_running() -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner()
        b = batcher(clock)
        _, gone = submit(b, runner, clock)
        _, kept = submit(b, runner, clock)
        gone.cancel()
        clock.advance(10.0)
        b.wake()
        await kept
        assert runner.calls == [(1, 1)]
        await b.aclose(NotReady("bye"))

    asyncio.run(main())


def test_one_batch_failure_reaches_every_request_in_it() -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner()
        runner.error = EngineFailed("boom")
        b = batcher(clock, delay_us=0)
        futures = [submit(b, runner, clock)[1] for _ in range(3)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, EngineFailed) for r in results)
        assert runner.calls == [(3, 3)]
        await b.aclose(NotReady("bye"))

    asyncio.run(main())


def test_a_caller_gone_mid_batch_does_not_break_the_others(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner()
        runner.gate = asyncio.Event()
        b = batcher(clock, delay_us=0)
        futures = [submit(b, runner, clock)[1] for _ in range(3)]
        await eventually(lambda: runner.calls != [])
        futures[1].cancel()
        runner.gate.set()
        assert (await futures[0]).index == 0
        assert (await futures[2]).index == 2
        await eventually(lambda: b.running_batches == 0)
        await b.aclose(NotReady("bye"))

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert not caplog.records


def test_batches_grow_while_every_instance_is_busy() -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner(capacity=1)
        runner.gate = asyncio.Event()
        b = batcher(clock, delay_us=0)
        first = submit(b, runner, clock)[1]
        await eventually(lambda: len(runner.calls) == 1)
        later = [submit(b, runner, clock)[1] for _ in range(3)]
        await asyncio.sleep(0)
        assert len(runner.calls) == 1
        assert b.queue_size == 3
        runner.gate.set()
        await asyncio.gather(first, *later)
        assert runner.calls == [(1, 1), (3, 3)]
        await b.aclose(NotReady("bye"))

    asyncio.run(main())


def test_higher_priority_requests_take_the_free_instance_first() -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner(capacity=1)
        runner.gate = asyncio.Event()
        b = batcher(clock, delay_us=0, max_batch_size=1)
        blocker = submit(b, runner, clock)[1]
        await eventually(lambda: len(runner.calls) == 1)
        order: list[str] = []
        low = submit(b, runner, clock)[1]
        high = submit(b, runner, clock, priority=5)[1]
        low.add_done_callback(lambda _: order.append("low"))
        high.add_done_callback(lambda _: order.append("high"))
        runner.gate.set()
        await asyncio.gather(blocker, low, high)
        assert order == ["high", "low"]
        await b.aclose(NotReady("bye"))

    asyncio.run(main())


def test_fail_version_and_close_fail_what_is_queued() -> None:
    async def main() -> None:
        clock = FakeClock()
        one, two = FakeRunner(load_id=1), FakeRunner(load_id=2)
        b = batcher(clock)
        _, f1 = submit(b, one, clock)
        _, f2 = submit(b, two, clock)
        b.fail_version(1, NotReady("version 1 released"))
        with pytest.raises(NotReady, match="released"):
            await f1
        await b.aclose(NotReady("shutting down"))
        with pytest.raises(NotReady, match="shutting down"):
            await f2
        assert one.calls == []
        assert two.calls == []

    asyncio.run(main())


def test_outputs_are_split_back_in_order() -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner()
        b = batcher(clock, delay_us=0)
        futures = [submit(b, runner, clock, rows=r)[1] for r in (1, 2)]
        served = await asyncio.gather(*futures)
        for s in served:
            assert s.outcome.outputs[s.index]["y"].shape[0] in (1, 2)
        np.testing.assert_array_equal(served[0].outcome.outputs[0]["y"][0], np.arange(4) + 1001)
        await b.aclose(NotReady("bye"))

    asyncio.run(main())


def test_a_batch_is_padded_to_its_runners_sizes() -> None:
    async def main() -> None:
        clock = FakeClock()
        exact, bucketed = FakeRunner(load_id=1), FakeRunner(load_id=2, pad_sizes=(4, 8))
        b = batcher(clock, delay_us=0)
        futures = [submit(b, runner, clock, rows=3)[1] for runner in (exact, bucketed)]
        served = await asyncio.gather(*futures)
        assert (exact.calls, bucketed.calls) == ([(1, 3)], [(1, 4)])
        assert [s.padded_rows for s in served] == [3, 4]
        await b.aclose(NotReady("bye"))

    asyncio.run(main())


def test_a_crashed_loop_fails_its_queue_instead_of_hanging_and_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner()
        b = batcher(clock, delay_us=0)
        b.limits = "not limits"  # type: ignore[assignment]  # makes the policy raise
        _, doomed = submit(b, runner, clock)
        with pytest.raises(NotReady, match="batcher of 'm' failed"):
            await doomed
        b.limits = BatchLimits.from_config(BatchingConfig(max_batch_size=8, max_queue_delay_us=0))
        _, fine = submit(b, runner, clock)
        assert (await fine).index == 0
        await b.aclose(NotReady("bye"))

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert any("stopped" in r.message for r in caplog.records)


def test_an_idle_model_runs_at_once_then_batches_what_arrives_during_the_run() -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner(capacity=1)
        runner.gate = asyncio.Event()
        b = batcher(clock, when_idle=True)  # a 10 s delay: only the idle rule can start a run
        first = submit(b, runner, clock)[1]
        await eventually(lambda: len(runner.calls) == 1)
        later = [submit(b, runner, clock)[1] for _ in range(3)]
        await asyncio.sleep(0)
        assert b.queue_size == 3
        runner.gate.set()
        await asyncio.gather(first, *later)
        assert runner.calls == [(1, 1), (3, 3)]
        await b.aclose(NotReady("bye"))

    asyncio.run(main())


def test_a_second_instance_waits_for_the_delay_while_one_batch_runs() -> None:
    async def main() -> None:
        clock, runner = FakeClock(), FakeRunner(capacity=2)
        runner.gate = asyncio.Event()
        b = batcher(clock, when_idle=True)
        first = submit(b, runner, clock)[1]
        await eventually(lambda: len(runner.calls) == 1)
        second = submit(b, runner, clock)[1]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(runner.calls) == 1
        assert b.queue_size == 1
        clock.advance(10.0)
        b.wake()
        await eventually(lambda: len(runner.calls) == 2)
        runner.gate.set()
        await asyncio.gather(first, second)
        await b.aclose(NotReady("bye"))

    asyncio.run(main())
