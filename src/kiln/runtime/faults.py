"""Fault injection: break a model's engine runs on purpose, at run time, on any backend.

Every instance the runtime creates is wrapped in a :class:`FaultyInstance` that asks the model's
:class:`FaultInjector` before each run. With no faults set this costs one attribute read. Tests and
benchmarks use it to prove recovery (retries, instance rebuilds, fallback) on real engines.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from kiln.compile.backends.base import Instance
from kiln.errors import ConfigError, EngineDead, EngineFailed, describe
from kiln.types import Array, Tensors


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """What to break. Counters (``fail_next``, ``dead_next``, ``kill_next``) are used up run by run.

    Attributes:
        fail_next: the next N runs raise ``EngineFailed`` (transient).
        fail_fraction: each run raises ``EngineFailed`` with this probability (seeded by ``seed``).
        delay_ms: every run is slowed by this many milliseconds (on its worker thread).
        kill_next: the next N runs break their instance: that run and every later run on the same
            instance raise ``EngineFailed`` until the runtime replaces the instance.
        dead_next: the next N runs raise ``EngineDead`` (fatal; probes of the primary count as runs).
        seed: seed of the ``fail_fraction`` draws.
    """

    fail_next: int = 0
    fail_fraction: float = 0.0
    delay_ms: float = 0.0
    kill_next: int = 0
    dead_next: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("fail_next", "kill_next", "dead_next"):
            if getattr(self, name) < 0:
                raise ConfigError(describe(f"{name} must be >= 0", seen=getattr(self, name)))
        if not 0.0 <= self.fail_fraction <= 1.0:
            raise ConfigError(describe("fail_fraction must be in 0..1", seen=self.fail_fraction))
        if self.delay_ms < 0:
            raise ConfigError(describe("delay_ms must be >= 0", seen=self.delay_ms))


class Fault(StrEnum):
    NONE = "none"
    FAIL = "fail"
    KILL = "kill"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class FaultCounts:
    """Faults injected so far (for reports and assertions)."""

    failed: int = 0
    killed: int = 0
    dead: int = 0
    delayed: int = 0


class FaultInjector:
    """The faults set for one model's engine (primary or fallback). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spec: FaultSpec | None = None
        self._rng = random.Random(0)
        self._fail_left = self._kill_left = self._dead_left = 0
        self._counts = dict.fromkeys(Fault, 0)
        self._delayed = 0

    def set(self, spec: FaultSpec | None) -> None:
        """Replace the current faults (``None`` clears them); counters start from ``spec``."""
        with self._lock:
            self._spec = spec
            if spec is not None:
                self._rng = random.Random(spec.seed)
                self._fail_left, self._kill_left = spec.fail_next, spec.kill_next
                self._dead_left = spec.dead_next

    def counts(self) -> FaultCounts:
        with self._lock:
            c = self._counts
            return FaultCounts(c[Fault.FAIL], c[Fault.KILL], c[Fault.DEAD], self._delayed)

    def draw(self) -> tuple[Fault, float]:
        """The fault for the next run and the delay (seconds) to add to it."""
        if self._spec is None:  # the common case, read without the lock
            return Fault.NONE, 0.0
        with self._lock:
            spec = self._current()
            if spec is None:
                return Fault.NONE, 0.0
            fault = self._next_fault(spec)
            if fault is not Fault.NONE:
                self._counts[fault] += 1
            if spec.delay_ms > 0:
                self._delayed += 1
            return fault, spec.delay_ms / 1000.0

    def _current(self) -> FaultSpec | None:
        return self._spec

    def _next_fault(self, spec: FaultSpec) -> Fault:
        if self._dead_left > 0:
            self._dead_left -= 1
            return Fault.DEAD
        if self._fail_left > 0:
            self._fail_left -= 1
            return Fault.FAIL
        if self._kill_left > 0:
            self._kill_left -= 1
            return Fault.KILL
        if spec.fail_fraction > 0 and self._rng.random() < spec.fail_fraction:
            return Fault.FAIL
        return Fault.NONE


class FaultyInstance:
    """An :class:`Instance` that obeys a :class:`FaultInjector` before running the real one."""

    def __init__(self, inner: Instance, injector: FaultInjector) -> None:
        self._inner = inner
        self._injector = injector
        self._killed = False

    def run(self, inputs: Tensors) -> dict[str, Array]:
        if self._killed:
            raise EngineFailed("this instance was killed by fault injection; it must be replaced")
        fault, delay_s = self._injector.draw()
        if delay_s > 0:
            time.sleep(delay_s)  # the injected slowness itself, on the worker thread
        if fault is Fault.DEAD:
            raise EngineDead("injected fault: the engine is dead")
        if fault is Fault.FAIL:
            raise EngineFailed("injected fault: transient engine failure")
        if fault is Fault.KILL:
            self._killed = True
            raise EngineFailed("injected fault: this instance was killed")
        return self._inner.run(inputs)

    def close(self) -> None:
        self._inner.close()
