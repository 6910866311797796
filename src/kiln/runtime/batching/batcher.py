"""The batcher of one model: an asyncio loop doing what :func:`plan_batch` decides.

One dict of waiting requests (arrival order), one ``asyncio.Event`` that wakes the loop, one
``Future`` per request. The loop asks the policy for a :class:`BatchPlan`, drops expired and
cancelled requests, starts the planned batch as a task on the pinned version's runner, and sleeps
until the plan's wake-up time or the next event (a new request, a finished batch). A batch's
result is split back to its requests; a failure reaches every request of the batch; results are
set only on futures not already done (a cancelled caller never breaks the batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from kiln._clock import Clock
from kiln.errors import DeadlineExceeded, KilnError, NotReady, Overloaded, describe
from kiln.runtime.batching.policy import BatchKey, BatchLimits, BatchPlan, plan_batch
from kiln.types import Array, Tensors

log = logging.getLogger("kiln.runtime")


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What running one batch gave: per-request outputs (batch order) and how it went."""

    outputs: Sequence[dict[str, Array]]
    route: str
    retries: int
    input_ns: int
    infer_ns: int
    output_ns: int


class BatchRunner(Protocol):
    """Where a batch runs: one loaded version. ``capacity`` batches of it may run at once; its
    batches are padded up to the smallest of ``pad_sizes`` that holds them (empty: no padding)."""

    @property
    def load_id(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def pad_sizes(self) -> tuple[int, ...]: ...

    async def run_batch(
        self, parts: Sequence[Tensors], row_counts: Sequence[int], padded_rows: int, deadline_s: float | None
    ) -> BatchOutcome: ...


@dataclass(frozen=True, slots=True)
class Served:
    """The result set on a request's future: its batch's outcome and its place in it."""

    outcome: BatchOutcome
    index: int
    started_s: float
    padded_rows: int


@dataclass(slots=True)
class _Pending:
    request_id: int
    runner: BatchRunner
    inputs: Tensors
    key: BatchKey
    rows: int
    priority: int
    arrival_s: float
    deadline_s: float | None
    future: asyncio.Future[Served]

    @property
    def cancelled(self) -> bool:
        return self.future.done()


class _Capacity:
    """Which versions have a free instance (``load_id in capacity``)."""

    def __init__(self) -> None:
        self.busy: dict[int, int] = {}
        self.limit: dict[int, int] = {}

    def __contains__(self, load_id: object) -> bool:
        if not isinstance(load_id, int):
            return False
        return self.busy.get(load_id, 0) < self.limit.get(load_id, 0)


class Batcher:
    """Batches one model's requests. Lives on one event loop (bound at the first ``submit``)."""

    def __init__(self, name: str, limits: BatchLimits, *, max_queue_size: int, clock: Clock) -> None:
        self.name = name
        self.limits = limits
        self.max_queue_size = max_queue_size
        self._clock = clock
        self._queue: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._capacity = _Capacity()
        self._pad_sizes: dict[int, tuple[int, ...]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._runner_task: asyncio.Task[None] | None = None

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    @property
    def running_batches(self) -> int:
        return len(self._tasks)

    def submit(
        self,
        runner: BatchRunner,
        inputs: Tensors,
        *,
        key: BatchKey,
        rows: int,
        priority: int,
        arrival_s: float,
        deadline_s: float | None,
    ) -> tuple[int, asyncio.Future[Served]]:
        """Queue one request; its id and future. ``Overloaded`` at once when the queue is full."""
        loop = self._bind()
        if len(self._queue) >= self.max_queue_size:
            raise Overloaded(
                describe(
                    f"model {self.name!r} has {len(self._queue)} requests waiting",
                    seen=f"max_queue_size {self.max_queue_size}",
                    fix="retry later, add instances, or raise max_queue_size",
                )
            )
        request_id = next(self._ids)
        future: asyncio.Future[Served] = loop.create_future()
        self._queue[request_id] = _Pending(
            request_id, runner, inputs, key, rows, priority, arrival_s, deadline_s, future
        )
        self._capacity.limit[runner.load_id] = runner.capacity
        self._pad_sizes[runner.load_id] = runner.pad_sizes
        self.wake()
        return request_id, future

    def discard(self, request_id: int) -> None:
        """Forget a request whose caller went away (cancelled before it ran)."""
        self._queue.pop(request_id, None)

    def wake(self) -> None:
        """Make the loop decide again now (after a clock change, or from tests)."""
        if self._event is not None:
            self._event.set()

    def fail_version(self, load_id: int, error: KilnError) -> None:
        """Fail every request still queued for one version. Call on the loop's thread."""
        doomed = [p for p in self._queue.values() if p.key[0] == load_id]
        for pending in doomed:
            del self._queue[pending.request_id]
            if not pending.future.done():
                pending.future.set_exception(error)

    def fail_version_threadsafe(self, load_id: int, error: KilnError) -> None:
        self._call_threadsafe(self.fail_version, load_id, error)

    def forget_version(self, load_id: int) -> None:
        """Drop the capacity bookkeeping of a released version. Call on the loop's thread."""
        if self._capacity.busy.get(load_id, 0) == 0:
            self._capacity.busy.pop(load_id, None)
            self._capacity.limit.pop(load_id, None)
            self._pad_sizes.pop(load_id, None)

    def forget_version_threadsafe(self, load_id: int) -> None:
        self._call_threadsafe(self.forget_version, load_id)

    def _call_threadsafe(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # RuntimeError: the loop closed in between, so nothing waits on this any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    async def aclose(self, error: KilnError) -> None:
        """Stop the loop, fail everything still queued, let running batches finish."""
        if self._runner_task is not None:
            self._runner_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner_task
            self._runner_task = None
        for pending in list(self._queue.values()):
            if not pending.future.done():
                pending.future.set_exception(error)
        self._queue.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None and not self._loop.is_closed():
                raise RuntimeError(f"model {self.name!r} is already served on another running event loop")
            self._queue.clear()  # leftovers of a closed loop can never complete
            self._tasks.clear()
            self._capacity = _Capacity()
            self._pad_sizes.clear()
            self._loop, self._event = loop, asyncio.Event()
            self._runner_task = None
        if self._runner_task is None or self._runner_task.done():
            self._runner_task = loop.create_task(self._run(), name=f"kiln-batcher-{self.name}")
            self._runner_task.add_done_callback(self._runner_stopped)
        return loop

    def _runner_stopped(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error(
            "the batcher of %s stopped; failing its queued requests", self.name, exc_info=task.exception()
        )
        for pending in list(self._queue.values()):
            if not pending.future.done():
                pending.future.set_exception(NotReady(f"the batcher of {self.name!r} failed; retry"))
        self._queue.clear()

    async def _run(self) -> None:
        assert self._event is not None
        while True:
            plan = plan_batch(
                self._queue.values(),
                now_s=self._clock.now(),
                limits=self.limits,
                runnable=self._capacity,
                in_flight=len(self._tasks),
                pad_sizes=self._pad_sizes,
            )
            self._drop(plan)
            if plan.run:
                self._launch(plan)
                continue
            self._event.clear()
            if plan.wake_at_s is None:
                await self._event.wait()
                continue
            delay_s = plan.wake_at_s - self._clock.now()
            if delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_s):
                        await self._event.wait()

    def _drop(self, plan: BatchPlan) -> None:
        for request_id in plan.cancelled:
            self._queue.pop(request_id, None)
        for request_id in plan.expired:
            pending = self._queue.pop(request_id)
            if not pending.future.done():
                waited = self._clock.now() - pending.arrival_s
                pending.future.set_exception(
                    DeadlineExceeded(
                        describe(
                            f"request to {self.name!r} reached its deadline before it could run",
                            seen=f"waited {waited:.3f}s",
                            fix="raise timeout_s, lower the load, or add instances",
                        )
                    )
                )

    def _launch(self, plan: BatchPlan) -> None:
        entries = [self._queue.pop(request_id) for request_id in plan.run]
        runner = entries[0].runner
        busy = self._capacity.busy
        busy[runner.load_id] = busy.get(runner.load_id, 0) + 1
        assert self._loop is not None
        task = self._loop.create_task(self._execute(runner, entries, plan.padded_rows))
        self._tasks.add(task)
        task.add_done_callback(partial(self._finished, runner.load_id))

    def _finished(self, load_id: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._capacity.busy[load_id] -= 1
        if not task.cancelled() and task.exception() is not None:
            log.error("batch task of %s failed", self.name, exc_info=task.exception())
        self.wake()

    async def _execute(self, runner: BatchRunner, entries: list[_Pending], padded_rows: int) -> None:
        started_s = self._clock.now()
        deadlines = [e.deadline_s for e in entries]
        deadline_s = None if None in deadlines else max(d for d in deadlines if d is not None)
        try:
            outcome = await runner.run_batch(
                [e.inputs for e in entries], [e.rows for e in entries], padded_rows, deadline_s
            )
        except asyncio.CancelledError:
            _fail_all(entries, NotReady(f"model {self.name!r} is shutting down"))
            raise
        except Exception as exc:
            _fail_all(entries, exc)
            return
        for index, entry in enumerate(entries):
            if not entry.future.done():
                entry.future.set_result(Served(outcome, index, started_s, padded_rows))


def _fail_all(entries: Sequence[_Pending], error: BaseException) -> None:
    for entry in entries:
        if not entry.future.done():
            entry.future.set_exception(error)
