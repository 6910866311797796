"""The batching decision, driven by hand-built queues and explicit times (no clock, no sleeps)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import pytest

from kiln.runtime.batching.policy import BatchKey, BatchLimits, BatchPlan, is_worth_running_early, plan_batch
from kiln.runtime.config import BatchingConfig

SHAPE: Hashable = ((4,),)
ALL = range(100)


@dataclass(frozen=True)
class Req:
    request_id: int
    arrival_s: float = 0.0
    rows: int = 1
    priority: int = 0
    deadline_s: float | None = None
    cancelled: bool = False
    key: BatchKey = (1, SHAPE)


def limits(
    max_batch_size: int = 8,
    delay_s: float = 0.010,
    preferred: tuple[int, ...] = (),
    pad: bool = True,
    when_idle: bool = False,
) -> BatchLimits:
    """The tests of the delay rule turn ``dispatch_when_idle`` off; its own tests turn it on."""
    config = BatchingConfig(
        max_batch_size=max_batch_size,
        max_queue_delay_us=round(delay_s * 1e6),
        preferred_batch_sizes=preferred,
        pad_to_preferred=pad,
        dispatch_when_idle=when_idle,
    )
    return BatchLimits.from_config(config)


def plan(
    queue: list[Req],
    now_s: float,
    lim: BatchLimits | None = None,
    runnable: range | set[int] = ALL,
    in_flight: int = 0,
) -> BatchPlan:
    return plan_batch(queue, now_s=now_s, limits=lim or limits(), runnable=runnable, in_flight=in_flight)


def test_an_empty_queue_waits_for_an_event() -> None:
    assert plan([], 5.0) == BatchPlan()


def test_a_lone_request_waits_for_the_delay_counted_from_its_arrival() -> None:
    waiting = plan([Req(1, arrival_s=1.000)], now_s=1.004)
    assert waiting.run == ()
    assert waiting.wake_at_s == 1.010
    ready = plan([Req(1, arrival_s=1.000)], now_s=1.010)
    assert (ready.run, ready.rows, ready.padded_rows) == ((1,), 1, 1)


def test_the_delay_counts_from_the_oldest_request_not_the_newest() -> None:
    queue = [Req(1, arrival_s=1.000), Req(2, arrival_s=1.009)]
    assert plan(queue, now_s=1.010).run == (1, 2)


def test_a_full_batch_runs_at_once_and_leaves_the_rest() -> None:
    queue = [Req(i, arrival_s=1.0) for i in range(1, 11)]
    decision = plan(queue, now_s=1.0)
    assert decision.run == tuple(range(1, 9))
    assert decision.rows == 8


def test_zero_delay_runs_whatever_is_queued() -> None:
    decision = plan([Req(1, arrival_s=3.0)], now_s=3.0, lim=limits(delay_s=0.0))
    assert decision.run == (1,)


def test_a_preferred_size_reached_exactly_runs_before_the_delay() -> None:
    lim = limits(max_batch_size=16, preferred=(4, 8))
    three = [Req(i) for i in range(3)]
    assert plan(three, now_s=0.001, lim=lim).run == ()
    five = [Req(i) for i in range(5)]
    decision = plan(five, now_s=0.001, lim=lim)
    assert decision.run == (0, 1, 2, 3)
    assert decision.padded_rows == 4


def test_a_preferred_size_that_cannot_be_packed_exactly_waits() -> None:
    lim = limits(max_batch_size=16, preferred=(4,))
    queue = [Req(1, rows=3), Req(2, rows=3)]
    assert plan(queue, now_s=0.001, lim=lim).run == ()


def test_a_batch_is_padded_to_the_nearest_bucket() -> None:
    lim = limits(max_batch_size=8, preferred=(2, 4))
    decision = plan([Req(1, rows=3)], now_s=1.0, lim=lim)
    assert (decision.rows, decision.padded_rows) == (3, 4)
    no_pad = limits(max_batch_size=8, preferred=(2, 4), pad=False)
    assert plan([Req(1, rows=3)], now_s=1.0, lim=no_pad).padded_rows == 3


def test_without_preferred_sizes_nothing_is_padded() -> None:
    assert plan([Req(1, rows=3)], now_s=1.0).padded_rows == 3


def test_each_version_is_padded_to_its_own_sizes() -> None:
    lim = limits(max_batch_size=16, preferred=(4, 8))
    queue = [Req(1, rows=10, key=(1, SHAPE)), Req(2, rows=10, arrival_s=0.5, key=(2, SHAPE))]
    pads = {1: (4, 8), 2: (4, 8, 16)}
    first = plan_batch(queue, now_s=1.0, limits=lim, runnable={1}, pad_sizes=pads)
    assert (first.key, first.rows, first.padded_rows) == ((1, SHAPE), 10, 10)
    second = plan_batch(queue, now_s=1.0, limits=lim, runnable={2}, pad_sizes=pads)
    assert (second.key, second.rows, second.padded_rows) == ((2, SHAPE), 10, 16)
    unnamed = plan_batch(queue, now_s=1.0, limits=lim, runnable={2}, pad_sizes={1: ()})
    assert unnamed.padded_rows == 16  # limits.pad_sizes: the buckets of a per-shape engine


def test_requests_with_other_shapes_or_versions_are_not_joined() -> None:
    queue = [
        Req(1, key=(1, ((4,),))),
        Req(2, key=(1, ((5,),))),
        Req(3, key=(2, ((4,),))),
        Req(4, key=(1, ((4,),))),
    ]
    assert plan(queue, now_s=1.0).run == (1, 4)


def test_multi_row_requests_fill_the_batch_in_order_without_skipping() -> None:
    queue = [Req(1, rows=5), Req(2, rows=4), Req(3, rows=1)]
    decision = plan(queue, now_s=1.0)
    assert (decision.run, decision.rows) == ((1,), 5)


def test_higher_priority_goes_first_within_a_batch() -> None:
    queue = [Req(i, arrival_s=0.1 * i) for i in range(8)] + [Req(99, arrival_s=2.0, priority=5)]
    decision = plan(queue, now_s=2.0)
    assert decision.run[0] == 99
    assert 7 not in decision.run
    assert len(decision.run) == 8


def test_the_group_with_the_highest_priority_head_runs_first() -> None:
    low = Req(1, arrival_s=0.0, key=(1, SHAPE))
    high = Req(2, arrival_s=0.5, priority=3, key=(2, SHAPE))
    assert plan([low, high], now_s=1.0).run == (2,)


def test_equal_priorities_serve_the_oldest_group_first() -> None:
    older = Req(1, arrival_s=0.0, key=(1, SHAPE))
    newer = Req(2, arrival_s=0.5, key=(2, SHAPE))
    assert plan([newer, older], now_s=1.0).run == (1,)


def test_expired_requests_are_dropped_before_they_run() -> None:
    queue = [Req(1, deadline_s=0.5), Req(2, deadline_s=5.0)]
    decision = plan(queue, now_s=1.0)
    assert decision.expired == (1,)
    assert decision.run == (2,)


def test_a_deadline_before_the_delay_ends_wakes_the_loop_early() -> None:
    decision = plan([Req(1, arrival_s=1.0, deadline_s=1.004)], now_s=1.001)
    assert decision.wake_at_s == 1.004


def test_cancelled_requests_are_dropped() -> None:
    decision = plan([Req(1, cancelled=True), Req(2)], now_s=1.0)
    assert decision.cancelled == (1,)
    assert decision.run == (2,)


def test_a_version_without_a_free_instance_waits_but_its_deadlines_still_expire() -> None:
    queue = [Req(1, deadline_s=0.5, key=(1, SHAPE)), Req(2, deadline_s=9.0, key=(1, SHAPE))]
    decision = plan(queue, now_s=1.0, runnable=set())
    assert decision.run == ()
    assert decision.expired == (1,)
    assert decision.wake_at_s == 9.0


def test_another_version_runs_while_one_is_busy() -> None:
    queue = [Req(1, key=(1, SHAPE)), Req(2, key=(2, SHAPE))]
    assert plan(queue, now_s=1.0, runnable={2}).run == (2,)


CTR_PREFERRED = (1, 16, 64, 256)


def test_a_small_preferred_size_never_cuts_a_fuller_batch_short() -> None:
    lim = limits(max_batch_size=256, preferred=CTR_PREFERRED)
    ten = [Req(i, arrival_s=1.000) for i in range(10)]
    waiting = plan(ten, now_s=1.001, lim=lim)
    assert waiting.run == ()
    assert waiting.wake_at_s == 1.010
    ready = plan(ten, now_s=1.010, lim=lim)
    assert ready.run == tuple(range(10))
    assert (ready.rows, ready.padded_rows) == (10, 16)


def test_a_lone_request_runs_at_once_when_one_is_a_preferred_size() -> None:
    lim = limits(max_batch_size=256, preferred=CTR_PREFERRED)
    assert plan([Req(1, arrival_s=2.0)], now_s=2.0, lim=lim).run == (1,)
    assert plan([Req(1), Req(2)], now_s=0.001, lim=lim).run == ()


def test_a_preferred_size_runs_early_when_it_takes_most_of_the_queue() -> None:
    lim = limits(max_batch_size=256, preferred=CTR_PREFERRED)
    seventeen = [Req(i) for i in range(17)]
    decision = plan(seventeen, now_s=0.001, lim=lim)
    assert decision.run == tuple(range(16))
    assert decision.padded_rows == 16
    thirty_three = [Req(i) for i in range(33)]
    assert plan(thirty_three, now_s=0.001, lim=lim).run == ()


@pytest.mark.parametrize(
    ("rows", "pending", "early"), [(1, 1, True), (1, 2, False), (1, 10, False), (4, 5, True), (16, 32, False)]
)
def test_running_early_needs_more_rows_taken_than_left(rows: int, pending: int, early: bool) -> None:
    assert is_worth_running_early(rows, pending) is early


IDLE = limits(when_idle=True)


def test_dispatch_when_idle_is_on_by_default() -> None:
    assert BatchLimits.from_config(BatchingConfig()).dispatch_when_idle


def test_an_idle_model_runs_a_lone_request_at_once() -> None:
    decision = plan([Req(1, arrival_s=1.000)], now_s=1.000, lim=IDLE)
    assert (decision.run, decision.rows, decision.wake_at_s) == ((1,), 1, None)


def test_an_idle_model_runs_everything_queued_up_to_the_batch_limit() -> None:
    queue = [Req(i, arrival_s=1.0) for i in range(1, 6)]
    assert plan(queue, now_s=1.0, lim=IDLE).run == (1, 2, 3, 4, 5)
    twelve = [Req(i, arrival_s=1.0) for i in range(1, 13)]
    assert plan(twelve, now_s=1.0, lim=IDLE).run == tuple(range(1, 9))


def test_while_a_batch_runs_the_queue_waits_for_the_delay_as_before() -> None:
    queue = [Req(1, arrival_s=1.000), Req(2, arrival_s=1.002)]
    waiting = plan(queue, now_s=1.004, lim=IDLE, in_flight=1)
    assert waiting.run == ()
    assert waiting.wake_at_s == 1.010
    assert plan(queue, now_s=1.010, lim=IDLE, in_flight=1).run == (1, 2)


def test_while_a_batch_runs_a_full_or_preferred_batch_still_goes_at_once() -> None:
    lim = limits(max_batch_size=8, preferred=(4,), when_idle=True)
    four = [Req(i) for i in range(4)]
    assert plan(four, now_s=0.001, lim=lim, in_flight=1).run == (0, 1, 2, 3)
    nine = [Req(i) for i in range(9)]
    assert plan(nine, now_s=0.001, lim=lim, in_flight=1).run == tuple(range(8))


def test_an_idle_model_without_a_free_instance_for_the_version_waits() -> None:
    queue = [Req(1, key=(1, SHAPE)), Req(2, key=(2, SHAPE))]
    assert plan(queue, now_s=1.0, lim=IDLE, runnable={2}).run == (2,)
    assert plan(queue, now_s=1.0, lim=IDLE, runnable=set()).run == ()


def test_an_idle_model_still_drops_expired_and_cancelled_requests_first() -> None:
    queue = [Req(1, deadline_s=0.5), Req(2, cancelled=True), Req(3)]
    decision = plan(queue, now_s=1.0, lim=IDLE)
    assert (decision.expired, decision.cancelled, decision.run) == ((1,), (2,), (3,))


def test_an_idle_model_pads_to_the_nearest_bucket() -> None:
    lim = limits(max_batch_size=16, preferred=(4, 16), when_idle=True)
    decision = plan([Req(i) for i in range(5)], now_s=0.0, lim=lim)
    assert (decision.rows, decision.padded_rows) == (5, 16)


def test_with_dispatch_when_idle_off_an_idle_model_waits_for_the_delay() -> None:
    off = limits(when_idle=False)
    waiting = plan([Req(1, arrival_s=1.000)], now_s=1.000, lim=off, in_flight=0)
    assert (waiting.run, waiting.wake_at_s) == ((), 1.010)
