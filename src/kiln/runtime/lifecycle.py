"""The life of one model version: an explicit state machine, every allowed move in one table.

```
LOADING ──► WARMING ──► READY ──► DRAINING ──► UNLOADED
   │           │
   └───────────┴──► FAILED      (the active version keeps serving)
```

READY versions admit requests (the active one, and kept earlier ones asked for by name);
DRAINING versions finish the requests pinned to them and admit none.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from kiln._clock import Clock
from kiln.errors import KilnError, describe


class VersionState(StrEnum):
    LOADING = "LOADING"
    WARMING = "WARMING"
    READY = "READY"
    DRAINING = "DRAINING"
    UNLOADED = "UNLOADED"
    FAILED = "FAILED"


_S = VersionState
TRANSITIONS: Mapping[VersionState, frozenset[VersionState]] = MappingProxyType(
    {
        _S.LOADING: frozenset({_S.WARMING, _S.FAILED}),
        _S.WARMING: frozenset({_S.READY, _S.FAILED}),
        _S.READY: frozenset({_S.DRAINING}),
        _S.DRAINING: frozenset({_S.UNLOADED}),
        _S.UNLOADED: frozenset(),
        _S.FAILED: frozenset(),
    }
)
"""Allowed moves. Anything else is a bug in the caller and raises ``LifecycleError``."""


class LifecycleError(KilnError):
    """A version was asked to make a move its state machine does not allow."""


def transition(current: VersionState, target: VersionState) -> VersionState:
    """``target`` when the move is allowed, else ``LifecycleError`` naming both states."""
    allowed = TRANSITIONS[current]
    if target not in allowed:
        names = ", ".join(sorted(allowed)) or "none (final state)"
        raise LifecycleError(
            describe(f"a version cannot move from {current} to {target}", fix=f"allowed: {names}")
        )
    return target


def is_final(state: VersionState) -> bool:
    return not TRANSITIONS[state]


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """What one version is doing, as reported by ``ModelSlot.status()``.

    ``reason`` says why a version FAILED (or why it was unloaded); ``route`` is where its batches
    run (``primary`` or ``fallback``) and ``primary_health`` one of ``healthy``, ``unhealthy``,
    ``dead``.
    """

    version: str
    state: VersionState
    reason: str | None
    active: bool
    since_s: float
    memory_bytes: int = 0
    route: str = "primary"
    primary_health: str = "healthy"
    has_fallback: bool = False


class VersionLifecycle:
    """The state of one load of one version; moves only through :func:`transition`."""

    def __init__(self, version: str, clock: Clock) -> None:
        self.version = version
        self._clock = clock
        self._lock = threading.Lock()
        self.state = VersionState.LOADING
        self.reason: str | None = None
        self.since_s = clock.now()

    def move(self, target: VersionState, reason: str | None = None) -> None:
        with self._lock:
            self.state = transition(self.state, target)
            self.since_s = self._clock.now()
            if reason is not None:
                self.reason = reason
