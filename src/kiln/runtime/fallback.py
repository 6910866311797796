"""Where a version's batches run: its primary engine or its fallback (e.g. the ORT CPU engine).

A small state holder with decisions taken from its state and ``now``; the thin loop in the slot
runs the probes it asks for. The primary is *healthy*, *unhealthy* (retries spent) or *dead*
(``EngineDead``). While it is not healthy and a fallback exists, batches go to the fallback, and
every ``probe_interval_s`` a probe checks the primary; a good probe returns traffic to it.
Every change of route is kept as a :class:`RoutingChange` and counted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum


class Route(StrEnum):
    PRIMARY = "primary"
    FALLBACK = "fallback"


class Health(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class RoutingChange:
    """A change of the primary's health; ``rerouted`` when it also moved traffic."""

    at_s: float
    previous: Route
    route: Route
    health: Health
    reason: str

    @property
    def rerouted(self) -> bool:
        return self.previous is not self.route


class FallbackRouter:
    """Route and primary health of one version. Thread-safe; every method is O(1)."""

    def __init__(self, *, has_fallback: bool, probe_interval_s: float) -> None:
        self.has_fallback = has_fallback
        self.probe_interval_s = probe_interval_s
        self._lock = threading.Lock()
        self._health = Health.HEALTHY
        self._next_probe_s = 0.0
        self.num_changes = 0
        self.last_change: RoutingChange | None = None

    @property
    def health(self) -> Health:
        return self._health

    @property
    def route(self) -> Route:
        if self._health is Health.HEALTHY or not self.has_fallback:
            return Route.PRIMARY
        return Route.FALLBACK

    def primary_failed(self, *, dead: bool, reason: str, now_s: float) -> RoutingChange | None:
        """Record a primary failure; the change of route it causes, if any."""
        with self._lock:
            before = self.route
            worse = Health.DEAD if dead or self._health is Health.DEAD else Health.UNHEALTHY
            changed_health = worse is not self._health
            self._health = worse
            if changed_health:
                self._next_probe_s = now_s + self.probe_interval_s
            return self._note(before, now_s, reason) if changed_health else None

    def probe_due(self, now_s: float) -> bool:
        return self._health is not Health.HEALTHY and now_s >= self._next_probe_s

    def probe_result(self, *, ok: bool, reason: str, now_s: float) -> RoutingChange | None:
        """Record a probe's outcome: healthy again on success, the next probe scheduled otherwise."""
        with self._lock:
            if self._health is Health.HEALTHY:
                return None
            if not ok:
                self._next_probe_s = now_s + self.probe_interval_s
                return None
            before = self.route
            self._health = Health.HEALTHY
            return self._note(before, now_s, reason)

    def _note(self, before: Route, now_s: float, reason: str) -> RoutingChange:
        change = RoutingChange(now_s, before, self.route, self._health, reason)
        if change.rerouted:
            self.num_changes += 1
        self.last_change = change
        return change
