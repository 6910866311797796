"""Server readiness, decided from data: the repository's index and the runtime's models.

A model *should be served* when the repository shows one of its versions READY or LOADING, or
when the runtime serves it and the repository does not know it (a model added in code). The
server is ready when it has started, is not shutting down, and every model that should be served
can serve now. While a model reloads its old version stays active, so readiness does not flap.
Models the repository lists only as UNAVAILABLE, UNLOADING or FAILED are not waited for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kiln.repository.control import IndexEntry

_WANTED = frozenset({"READY", "LOADING"})


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the server is ready, and if not, what it waits for."""

    ready: bool
    waiting_for: tuple[str, ...] = ()
    reason: str = ""


def plan_readiness(
    *,
    started: bool,
    draining: bool,
    index: Sequence[IndexEntry],
    serving: Mapping[str, bool],
) -> Readiness:
    """``serving`` maps each model the runtime holds to whether it can serve now."""
    if draining:
        return Readiness(False, reason="shutting down")
    if not started:
        return Readiness(False, reason="starting")
    indexed = {entry.name for entry in index}
    wanted = {entry.name for entry in index if entry.state in _WANTED}
    wanted |= {name for name in serving if name not in indexed}
    waiting = tuple(sorted(name for name in wanted if not serving.get(name, False)))
    if waiting:
        return Readiness(False, waiting, reason=f"models not ready: {', '.join(waiting)}")
    return Readiness(True)
