"""Load shapes: a closed loop at a fixed concurrency, and an open loop at a fixed arrival rate.

**Closed loop** (``ClosedLoop``): ``concurrency`` workers each send a request, wait for its answer,
and send the next. It measures the best a client can get at that concurrency, but it slows down
with the server: when the server stalls, no requests are sent, and the stall is seen by one
request per worker only (*coordinated omission*).

**Open loop** (``OpenLoop``): requests arrive on a seeded Poisson schedule at ``rate_per_s``,
whether or not earlier ones have been answered, as independent users do. Latency is counted from
each request's *scheduled* arrival, so time a request spent waiting because the server (or the
load generator itself) fell behind is counted, never hidden.

Every step first runs ``warmup_s`` unmeasured, then ``duration_s`` measured: a request belongs to
the measurement when it was sent (closed) or scheduled (open) inside the measured span. Requests
still running at the end are awaited (up to ``Pacing.drain_timeout_s``) and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kiln._clock import SYSTEM_CLOCK, Clock
from kiln.bench.inputs import RequestPool
from kiln.bench.results import Reply, ServerCounters, StepRecorder, StepResult, error_kind
from kiln.bench.targets import Target
from kiln.errors import ConfigError, describe

Done = Callable[[float, int | None, str | None, Reply | None], None]
"""Called as each request ends: (offset s of its send or scheduled arrival, latency ns or None,
error kind or None, reply or None)."""


def _check(name: str, value: float, low: float, high: float = math.inf) -> None:
    if not low <= value <= high:
        raise ConfigError(describe(f"{name} is out of range", seen=value, fix=f"use {low}..{high}"))


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    """``concurrency`` requests in flight at all times, for ``warmup_s`` + ``duration_s``."""

    concurrency: int
    duration_s: float
    warmup_s: float = 1.0

    def __post_init__(self) -> None:
        _check("concurrency", self.concurrency, 1, 100_000)
        _check("duration_s", self.duration_s, 1e-3)
        _check("warmup_s", self.warmup_s, 0.0)

    @property
    def label(self) -> str:
        return f"c={self.concurrency}"


@dataclass(frozen=True, slots=True)
class OpenLoop:
    """Poisson arrivals at ``rate_per_s`` (seeded) for ``warmup_s`` + ``duration_s``.

    ``max_outstanding`` bounds the requests in flight; an arrival beyond it is not sent and counts
    as a ``ClientBacklog`` error (the load generator, not the server, is then the bottleneck).
    """

    rate_per_s: float
    duration_s: float
    warmup_s: float = 1.0
    seed: int = 0
    max_outstanding: int = 10_000

    def __post_init__(self) -> None:
        _check("rate_per_s", self.rate_per_s, 1e-3, 1e7)
        _check("duration_s", self.duration_s, 1e-3)
        _check("warmup_s", self.warmup_s, 0.0)
        _check("max_outstanding", self.max_outstanding, 1)

    @property
    def label(self) -> str:
        return f"{self.rate_per_s:g}/s"


@dataclass(frozen=True)
class Pacing:
    """The clock and sleep a load step runs on (injectable, so tests can run in virtual time),
    how long to wait for requests still running at the end, and an optional progress callback
    called about every ``tick_s`` with the seconds elapsed in the step."""

    clock: Clock = SYSTEM_CLOCK
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    drain_timeout_s: float = 30.0
    on_tick: Callable[[float], None] | None = None
    tick_s: float = 0.1


def poisson_arrivals(
    rate_per_s: float, duration_s: float, seed: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Arrival offsets (seconds from the start, increasing, all < ``duration_s``) of a Poisson process."""
    rng = np.random.default_rng(seed)
    expected = rate_per_s * duration_s
    times = np.cumsum(rng.exponential(1.0 / rate_per_s, int(expected + 10 * math.sqrt(expected) + 16)))
    while times[-1] < duration_s:  # rare: draw more
        extra = np.cumsum(rng.exponential(1.0 / rate_per_s, len(times))) + times[-1]
        times = np.concatenate([times, extra])
    return times[times < duration_s]


async def run_closed(
    target: Target, requests: RequestPool, spec: ClosedLoop, pacing: Pacing | None = None
) -> StepResult:
    """Run one closed-loop step and return what it measured."""
    pacing = pacing or Pacing()
    recorder = StepRecorder()
    clock = pacing.clock

    total_s = spec.warmup_s + spec.duration_s
    start = clock.now()
    done = _recording(recorder, spec.warmup_s, clock)

    async def worker(first: int) -> None:
        index = first
        while (sent := clock.now()) < start + total_s:
            await _send(target, requests[index], offset=sent - start, since=sent, clock=clock, done=done)
            index += spec.concurrency

    workers = [worker(i) for i in range(spec.concurrency)]
    counters = await _measure(
        target, workers, start=start, measure_from_s=spec.warmup_s, total_s=total_s, pacing=pacing
    )
    duration_s = recorder.span_s(start + spec.warmup_s, spec.duration_s)
    return recorder.result(spec.label, "closed", duration_s, concurrency=spec.concurrency, counters=counters)


async def run_open(
    target: Target, requests: RequestPool, spec: OpenLoop, pacing: Pacing | None = None
) -> StepResult:
    """Run one open-loop step and return what it measured (latency from scheduled arrivals)."""
    pacing = pacing or Pacing()
    recorder = StepRecorder()
    start = pacing.clock.now()
    counters = await open_loop(
        target,
        requests,
        rate_per_s=spec.rate_per_s,
        total_s=spec.warmup_s + spec.duration_s,
        measure_from_s=spec.warmup_s,
        seed=spec.seed,
        max_outstanding=spec.max_outstanding,
        done=_recording(recorder, spec.warmup_s, pacing.clock),
        pacing=pacing,
    )
    duration_s = recorder.span_s(start + spec.warmup_s, spec.duration_s)
    return recorder.result(spec.label, "open", duration_s, rate_per_s=spec.rate_per_s, counters=counters)


def _recording(recorder: StepRecorder, warmup_s: float, clock: Clock) -> Done:
    """A ``Done`` that records the measured requests (sent or scheduled after ``warmup_s``)."""

    def done(offset: float, latency_ns: int | None, kind: str | None, reply: Reply | None) -> None:
        if offset < warmup_s:
            return
        recorder.last_done_s = clock.now()
        if kind is not None:
            recorder.failure(kind)
        elif latency_ns is not None and reply is not None:
            recorder.success(latency_ns, reply)

    return done


async def open_loop(
    target: Target,
    requests: RequestPool,
    *,
    rate_per_s: float,
    total_s: float,
    measure_from_s: float,
    seed: int,
    max_outstanding: int,
    done: Done,
    pacing: Pacing,
) -> ServerCounters | None:
    """Send Poisson arrivals for ``total_s`` and report each through ``done``; the server's
    counter delta over ``[measure_from_s, end]`` when the target has counters."""
    clock = pacing.clock
    start = clock.now()
    arrivals = poisson_arrivals(rate_per_s, total_s, seed)

    async def dispatch() -> None:
        inflight: set[asyncio.Task[None]] = set()
        for index, offset in enumerate(arrivals.tolist()):
            scheduled = start + offset
            delay = scheduled - clock.now()
            if delay > 0:
                await pacing.sleep(delay)
            elif index % 16 == 0:
                await asyncio.sleep(0)  # behind schedule: still let answers in
            if len(inflight) >= max_outstanding:
                done(offset, None, "ClientBacklog", None)
                continue
            call = _send(target, requests[index], offset=offset, since=scheduled, clock=clock, done=done)
            task = asyncio.get_running_loop().create_task(call)
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        await _drain(inflight, pacing.drain_timeout_s)

    return await _measure(
        target, [dispatch()], start=start, measure_from_s=measure_from_s, total_s=total_s, pacing=pacing
    )


async def _send(
    target: Target, inputs: Any, *, offset: float, since: float, clock: Clock, done: Done
) -> None:
    """One request; its latency counts from ``since`` (the send, or the scheduled arrival)."""
    try:
        reply = await target.infer(inputs)
    except Exception as exc:
        done(offset, None, error_kind(exc), None)
        await asyncio.sleep(0)  # a target failing at once must not starve the other senders
        return
    done(offset, max(0, round((clock.now() - since) * 1e9)), None, reply)


async def _drain(tasks: set[asyncio.Task[None]], timeout_s: float) -> None:
    if not tasks:
        return
    _, late = await asyncio.wait(set(tasks), timeout=timeout_s)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late)


async def _measure(
    target: Target,
    senders: list[Coroutine[Any, Any, None]],
    *,
    start: float,
    measure_from_s: float,
    total_s: float,
    pacing: Pacing,
) -> ServerCounters | None:
    """Run the senders to the end; read the target's counters when measurement starts and ends."""
    clock = pacing.clock
    before: list[ServerCounters | None] = [None]

    async def read_at_start() -> None:
        delay = start + measure_from_s - clock.now()
        if delay > 0:
            await pacing.sleep(delay)
        before[0] = await target.counters()

    async def tick() -> None:
        assert pacing.on_tick is not None
        while True:
            pacing.on_tick(min(total_s, clock.now() - start))
            await asyncio.sleep(pacing.tick_s)

    ticker = asyncio.create_task(tick()) if pacing.on_tick is not None else None
    try:
        await asyncio.gather(read_at_start(), *senders)
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    after = await target.counters()
    return None if after is None or before[0] is None else after.minus(before[0])
