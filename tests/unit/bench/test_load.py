"""Load shapes in virtual time: closed and open loops, coordinated omission, errors, counters."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from bench_fakes import SPECS, SerialTarget, VirtualTime

from kiln.bench.inputs import RequestPool
from kiln.bench.load import ClosedLoop, OpenLoop, poisson_arrivals, run_closed, run_open
from kiln.errors import ConfigError

POOL = RequestPool.random(SPECS, count=4)


def test_poisson_arrivals_are_seeded_sorted_and_near_the_rate() -> None:
    a = poisson_arrivals(1000.0, 10.0, seed=3)
    assert np.array_equal(a, poisson_arrivals(1000.0, 10.0, seed=3))
    assert not np.array_equal(a, poisson_arrivals(1000.0, 10.0, seed=4))
    assert np.all(np.diff(a) > 0)
    assert a[-1] < 10.0
    assert 9_700 < len(a) < 10_300  # 10,000 expected, sd 100
    gaps = np.diff(a)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.05)  # exponential: cv 1


def test_closed_loop_at_concurrency_one_sees_the_service_time() -> None:
    time = VirtualTime()
    target = SerialTarget(time, service_s=0.010)
    result = asyncio.run(run_closed(target, POOL, ClosedLoop(1, duration_s=1.0, warmup_s=0.2), time.pacing()))
    assert result.shape == "closed"
    assert result.concurrency == 1
    assert result.ok == 100
    assert result.failed == 0
    assert result.throughput_per_s == pytest.approx(100.0, rel=0.02)
    assert result.summary.p99_ms == pytest.approx(10.0, rel=result.latency.relative_error)
    assert result.versions == {"1": 100}


def test_open_loop_counts_queueing_that_the_closed_loop_hides() -> None:
    """Arrivals at twice the capacity: a closed loop still reports the service time, an open loop
    measured from the scheduled arrivals reports the queue that builds up (coordinated omission)."""
    time = VirtualTime()
    closed = asyncio.run(
        run_closed(SerialTarget(time), POOL, ClosedLoop(1, duration_s=1.0, warmup_s=0.0), time.pacing())
    )
    time = VirtualTime()
    opened = asyncio.run(
        run_open(SerialTarget(time), POOL, OpenLoop(200.0, duration_s=1.0, warmup_s=0.0), time.pacing())
    )
    assert closed.summary.p99_ms == pytest.approx(10.0, rel=0.01)
    assert opened.shape == "open"
    assert opened.rate_per_s == 200.0
    assert opened.ok == len(poisson_arrivals(200.0, 1.0, seed=0))
    assert opened.summary.p99_ms > 10 * closed.summary.p99_ms
    assert opened.summary.max_ms > 500.0  # the last arrivals waited for most of the backlog
    assert opened.duration_s > 1.5  # served until the backlog ended, past the 1 s of arrivals
    assert opened.throughput_per_s < 120.0  # what it served, not the 200/s offered


def test_warmup_requests_are_not_measured() -> None:
    time = VirtualTime()
    target = SerialTarget(time)
    result = asyncio.run(run_open(target, POOL, OpenLoop(50.0, duration_s=1.0, warmup_s=1.0), time.pacing()))
    arrivals = poisson_arrivals(50.0, 2.0, seed=0)
    assert target.calls == len(arrivals)
    assert result.ok == int(np.sum(arrivals >= 1.0))


def test_errors_are_counted_by_kind_and_the_step_goes_on() -> None:
    time = VirtualTime()
    target = SerialTarget(time, fail=lambda n: n % 3 == 0)
    result = asyncio.run(run_open(target, POOL, OpenLoop(50.0, duration_s=2.0, warmup_s=0.0), time.pacing()))
    total = len(poisson_arrivals(50.0, 2.0, seed=0))
    assert result.ok + result.failed == total
    assert result.errors == {"Overloaded": (total + 2) // 3}
    assert result.latency.count == result.ok


def test_a_target_failing_every_request_gives_a_step_with_no_success() -> None:
    time = VirtualTime()
    target = SerialTarget(time, fail=lambda n: True)
    result = asyncio.run(run_open(target, POOL, OpenLoop(20.0, duration_s=1.0, warmup_s=0.0), time.pacing()))
    assert result.ok == 0
    assert result.failed == target.calls > 0
    assert result.throughput_per_s == 0.0


def test_backlog_beyond_max_outstanding_is_counted_not_sent() -> None:
    time = VirtualTime()
    target = SerialTarget(time, service_s=10.0)  # the first request blocks for the whole step
    spec = OpenLoop(100.0, duration_s=0.5, warmup_s=0.0, max_outstanding=3)
    result = asyncio.run(run_open(target, POOL, spec, time.pacing()))
    assert target.calls <= 3 + 1
    assert result.errors.get("ClientBacklog", 0) >= len(poisson_arrivals(100.0, 0.5, seed=0)) - 4


def test_server_counters_give_the_split_when_replies_do_not() -> None:
    time = VirtualTime()
    target = SerialTarget(time, service_s=0.010)
    target.with_counters = True
    result = asyncio.run(run_closed(target, POOL, ClosedLoop(2, duration_s=1.0, warmup_s=0.1), time.pacing()))
    assert result.split is not None
    assert result.split.source == "server-stats"
    assert result.split.compute_mean_ms == pytest.approx(10.0)
    assert result.split.queue_mean_ms == pytest.approx(10.0, rel=0.1)  # two in flight, one waits


@pytest.mark.parametrize(
    "make",
    [
        lambda: ClosedLoop(0, 1.0),
        lambda: ClosedLoop(1, 0.0),
        lambda: OpenLoop(0.0, 1.0),
        lambda: OpenLoop(10.0, 1.0, warmup_s=-1.0),
        lambda: OpenLoop(10.0, 1.0, max_outstanding=0),
    ],
)
def test_bad_shapes_are_refused(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="out of range"):
        make()
