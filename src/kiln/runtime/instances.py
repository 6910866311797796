"""A pool of execution instances of one resident engine, one worker thread per instance.

Work goes in as a function of the instance, ``fn(instance) -> T``, and comes back as a
``concurrent.futures.Future`` (:meth:`InstancePool.submit`, for control threads) or as an
``asyncio.Future`` of the calling event loop (:meth:`InstancePool.submit_async`, the request path:
the worker hands the outcome to the loop with one ``call_soon_threadsafe``, without the lock and
condition of a ``concurrent.futures.Future`` and the callbacks ``asyncio.wrap_future`` chains onto
it). Engine calls run on the pool's threads, never on the caller's. No lock is held while an
engine runs.

When a run fails the worker handles the instance before passing the error on:

- ``EngineFailed`` (or an unexpected exception): the instance is closed and a new one is made from
  the resident engine, so a retry runs on a fresh context;
- ``EngineDead``: the whole pool is marked dead; later work fails at once until :meth:`revive`;
- ``InvalidInput``: the instance is fine and kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from kiln.compile.backends.base import Instance
from kiln.errors import EngineDead, InvalidInput, NotReady, describe
from kiln.types import Array, Tensors

log = logging.getLogger("kiln.runtime")

T = TypeVar("T")


class _Outcome(Protocol):
    """Where a job's result goes: the part of ``concurrent.futures.Future`` the workers use."""

    def set_running_or_notify_cancel(self) -> bool: ...
    def set_result(self, result: Any) -> None: ...
    def set_exception(self, exception: BaseException | None) -> None: ...


_Job = tuple[Callable[[Instance], Any], _Outcome]


class _LoopOutcome:
    """Delivers a job's outcome from a worker thread to an ``asyncio.Future`` on its loop."""

    __slots__ = ("_loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()

    def set_running_or_notify_cancel(self) -> bool:
        # Read from the worker thread: at worst a job whose caller just left runs once more.
        return not self.future.done()

    def set_result(self, result: Any) -> None:
        self._deliver(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._deliver(None, exception)

    def _deliver(self, result: Any, exception: BaseException | None) -> None:
        # RuntimeError: the loop closed meanwhile, so nobody waits for this any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_settle, self.future, result, exception)


def _settle(future: asyncio.Future[Any], result: Any, exception: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


def close_quietly(thing: Instance | None, what: str) -> None:
    if thing is None:
        return
    try:
        thing.close()
    except Exception:
        log.exception("closing %s failed", what)


class InstancePool:
    """``num_instances`` instances made by ``create``; see the module docstring for failures."""

    def __init__(
        self,
        name: str,
        create: Callable[[], Instance],
        num_instances: int,
        *,
        on_rebuild: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.num_instances = num_instances
        self._create = create
        self._on_rebuild = on_rebuild
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._dead: str | None = None
        self._generation = 0

    @property
    def dead_reason(self) -> str | None:
        return self._dead

    def start(self, warmup: Sequence[Tensors] = ()) -> list[list[dict[str, Array]]]:
        """Create every instance on its worker thread and run ``warmup`` on each; the outputs per
        instance. On any failure every started worker is stopped and the first error raised."""
        started: list[Future[list[dict[str, Array]]]] = []
        for index in range(self.num_instances):
            ready: Future[list[dict[str, Array]]] = Future()
            thread = threading.Thread(
                target=self._work, args=(ready, warmup), name=f"kiln-{self.name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
            started.append(ready)
        outputs: list[list[dict[str, Array]]] = []
        error: BaseException | None = None
        for ready in started:
            try:
                outputs.append(ready.result())
            except BaseException as exc:
                error = error or exc
        if error is not None:
            self.close()
            raise error
        return outputs

    def submit(self, fn: Callable[[Instance], T]) -> Future[T]:
        """Queue ``fn`` for the next free instance. ``NotReady`` once the pool is closed."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise NotReady(describe(f"the instances of {self.name} are closed", fix="retry the request"))
            self._jobs.put((fn, future))
        return future

    def submit_async(self, fn: Callable[[Instance], T]) -> asyncio.Future[T]:
        """Like :meth:`submit`, from a coroutine: the result comes as a future of the running loop.
        Cancelling that future before a worker takes the job skips the job."""
        outcome = _LoopOutcome(asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise NotReady(describe(f"the instances of {self.name} are closed", fix="retry the request"))
            self._jobs.put((fn, outcome))
        return outcome.future

    def revive(self, probe: Callable[[Instance], object]) -> None:
        """Build a new instance, run ``probe`` on it; on success clear the dead mark and have every
        worker replace its instance before its next run. Raises whatever the probe raised."""
        instance = self._create()
        try:
            probe(instance)
        finally:
            close_quietly(instance, f"probe instance of {self.name}")
        with self._lock:
            self._dead = None
            self._generation += 1

    def close(self, timeout_s: float | None = None) -> bool:
        """Finish the work already queued, stop the workers and close their instances.

        True when every worker stopped within ``timeout_s``; only then may the engine be closed.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                for _ in self._threads:
                    self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout_s)
        self._fail_leftovers()
        return not any(thread.is_alive() for thread in self._threads)

    def _fail_leftovers(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job[1].set_running_or_notify_cancel():
                job[1].set_exception(NotReady(f"the instances of {self.name} were closed"))

    def _work(self, ready: Future[list[dict[str, Array]]], warmup: Sequence[Tensors]) -> None:
        instance: Instance | None = None
        try:
            instance = self._create()
            outputs = [instance.run(feed) for feed in warmup]
        except BaseException as exc:
            close_quietly(instance, f"instance of {self.name}")
            ready.set_exception(exc)
            return
        ready.set_result(outputs)
        generation = self._generation
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            if self._dead is not None:
                future.set_exception(EngineDead(f"engine of {self.name} is dead: {self._dead}"))
                continue
            if instance is None or generation != self._generation:
                close_quietly(instance, f"instance of {self.name}")
                instance, generation = self._new_instance(), self._generation
                if instance is None:
                    future.set_exception(EngineDead(f"engine of {self.name} is dead: {self._dead}"))
                    continue
            instance = self._run(instance, fn, future)
        close_quietly(instance, f"instance of {self.name}")

    def _run(self, instance: Instance, fn: Callable[[Instance], Any], future: _Outcome) -> Instance | None:
        """Run one job; the instance to keep using (a new one after a transient failure)."""
        try:
            result = fn(instance)
        except EngineDead as exc:
            self._mark_dead(str(exc))
            future.set_exception(exc)
            return instance
        except InvalidInput as exc:
            future.set_exception(exc)
            return instance
        except Exception as exc:
            log.warning(
                "run on %s failed (%s: %s); replacing the instance", self.name, type(exc).__name__, exc
            )
            close_quietly(instance, f"instance of {self.name}")
            replacement = self._new_instance()
            future.set_exception(exc)
            return replacement
        future.set_result(result)
        return instance

    def _new_instance(self) -> Instance | None:
        try:
            instance = self._create()
        except Exception as exc:
            self._mark_dead(f"could not create a new instance: {type(exc).__name__}: {exc}")
            return None
        if self._on_rebuild is not None:
            self._on_rebuild()
        return instance

    def _mark_dead(self, reason: str) -> None:
        with self._lock:
            if self._dead is None:
                log.error("engine of %s is dead: %s", self.name, reason)
                self._dead = reason
