"""Targets for the load generator's unit tests, running in virtual time on a FakeClock.

``VirtualTime.sleep`` advances the clock instead of waiting; ``SerialTarget`` serves one request at
a time, each taking ``service_s`` of virtual time, so queueing is exact and nothing depends on the
machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kiln._clock import FakeClock
from kiln.bench.load import Pacing
from kiln.bench.results import Reply, ServerCounters
from kiln.errors import Overloaded
from kiln.types import Tensors, TensorSpec

SPECS = (TensorSpec("x", "FP32", (-1, 4)),)


class VirtualTime:
    def __init__(self) -> None:
        self.clock = FakeClock(start=100.0)

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.clock.advance(seconds)
        await asyncio.sleep(0)

    def pacing(self) -> Pacing:
        return Pacing(clock=self.clock, sleep=self.sleep, drain_timeout_s=5.0)


class SerialTarget:
    """One request at a time, ``service_s`` each; ``fail`` decides per request number to raise."""

    def __init__(
        self, time: VirtualTime, service_s: float = 0.010, fail: Callable[[int], bool] | None = None
    ) -> None:
        self.time = time
        self.service_s = service_s
        self.fail = fail
        self.lock = asyncio.Lock()
        self.calls = 0
        self.served = 0
        self.queue_ns = 0
        self.closed = False
        self.with_counters = False

    @property
    def description(self) -> str:
        return "serial fake"

    async def open(self) -> tuple[TensorSpec, ...]:
        return SPECS

    async def infer(self, inputs: Tensors) -> Reply:
        number = self.calls
        self.calls += 1
        if self.fail is not None and self.fail(number):
            raise Overloaded("fake: full")
        arrived = self.time.clock.now()
        async with self.lock:
            waited = self.time.clock.now() - arrived
            self.time.clock.advance(self.service_s)
            await asyncio.sleep(0)
        self.served += 1
        self.queue_ns += round(waited * 1e9)
        return Reply(version="1")

    async def counters(self) -> ServerCounters | None:
        if not self.with_counters:
            return None
        return ServerCounters(self.served, 0, self.queue_ns, round(self.served * self.service_s * 1e9))

    async def aclose(self) -> None:
        self.closed = True
