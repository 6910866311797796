"""The poll loop: run one repository step every ``poll_interval_s``, or at once when woken.

A step is whatever the owner passes (:meth:`kiln.repository.manager.RepositoryManager.step`). An
explicit load wakes the loop with the model's name, which that step may trust (see
:func:`kiln.repository.scan.settle`). With ``poll_interval_s`` 0 nothing is polled: steps run only
when woken (explicit control). A step that raises is logged; the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("kiln.repository")

Step = Callable[[frozenset[str]], Awaitable[None]]


class Watcher:
    """Runs ``step(trusted_models)`` on a timer and on :meth:`wake`, one step at a time."""

    def __init__(self, step: Step, poll_interval_s: float) -> None:
        if poll_interval_s < 0:
            raise ValueError(f"poll_interval_s must be >= 0, seen {poll_interval_s}")
        self._step = step
        self.poll_interval_s = poll_interval_s
        self._trusted: set[str] = set()
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.num_steps = 0

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="kiln-repository-watcher")

    def wake(self, trusted: str | None = None) -> None:
        """Run a step as soon as possible (thread-safe). ``trusted`` names a model to trust."""
        if trusted is not None:
            self._trusted.add(trusted)
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(event.set)

    async def _run(self) -> None:
        assert self._event is not None
        while True:
            timeout = self.poll_interval_s if self.poll_interval_s > 0 else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
            self._event.clear()
            trusted, self._trusted = frozenset(self._trusted), set()
            try:
                await self._step(trusted)
            except Exception:
                log.exception("a repository step failed; retrying at the next poll")
            self.num_steps += 1

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
