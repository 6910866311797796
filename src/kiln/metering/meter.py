"""Metering: the server's :class:`~kiln.metering.usage.Meter`. Charges each event in EPU, keeps
running totals per (tenant, model) for ``/metrics``, and hands the record to the ledger.

``record`` never blocks and never raises: it checks the event, looks up the engine's efficiency
factor, adds to in-memory totals under a short lock and appends to the ledger's deque. An event
that cannot be metered (or arrives after ``close``) is dropped, counted by reason and logged, so a
metering problem never fails a request that was served.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kiln.metering.buckets import Usage
from kiln.metering.epu import (
    DEFAULT_EFFICIENCY,
    EfficiencyLookup,
    InvalidUsage,
    charge,
    check_event,
    is_valid_factor,
)
from kiln.metering.ledger import LedgerClosed, LedgerStats, UsageLedger
from kiln.metering.usage import UsageEvent

log = logging.getLogger("kiln.metering")


@dataclass(frozen=True)
class MeteringSnapshot:
    """Totals since this process started: ``usage`` per (tenant, model); ``rejected`` events by
    reason (``invalid``, ``closed``); the ledger's own counts (None without a ledger)."""

    usage: Mapping[tuple[str, str], Usage]
    rejected: Mapping[str, int] = field(default_factory=dict)
    ledger: LedgerStats | None = None


class _Tally:
    """Running totals of one (tenant, model), added to in place under the meter's lock (the
    request path calls ``record`` per request); :class:`Usage` values are made at snapshot."""

    __slots__ = ("device_seconds", "epu", "items", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.items = 0
        self.device_seconds = 0.0
        self.epu = 0.0

    def usage(self) -> Usage:
        return Usage(self.requests, self.items, self.device_seconds, self.epu)


def _unit(model: str, version: str) -> float:
    del model, version
    return DEFAULT_EFFICIENCY


class Metering:
    """A :class:`~kiln.metering.usage.Meter` writing to ``ledger`` (None: totals for /metrics only).

    ``efficiency_of(model, version)`` gives the factor EPU are charged at (default: 1.0 for
    everything). It runs on the caller's thread, so it must be a cheap look-up, e.g. an
    :class:`~kiln.metering.epu.EfficiencyTable`. A factor that is missing, not finite or <= 0, or a
    look-up that raises, counts 1.0 (logged once per model version).
    """

    def __init__(
        self, ledger: UsageLedger | None = None, *, efficiency_of: EfficiencyLookup | None = None
    ) -> None:
        self.ledger = ledger
        self._efficiency_of = efficiency_of or _unit
        self._lock = threading.Lock()
        self._usage: dict[tuple[str, str], _Tally] = {}
        self._rejected: dict[str, int] = {}
        self._warned: set[object] = set()

    @classmethod
    def open(
        cls, path: Path | str, *, efficiency_of: EfficiencyLookup | None = None, flush_interval_s: float = 1.0
    ) -> Metering:
        """Metering into the ledger file at ``path`` (created when missing)."""
        return cls(UsageLedger(path, flush_interval_s=flush_interval_s), efficiency_of=efficiency_of)

    def record(self, event: UsageEvent) -> None:
        """Meter one served request. Non-blocking; never raises."""
        try:
            check_event(event)
        except InvalidUsage as error:
            self._reject("invalid", error)
            return
        record = charge(event, self._factor(event.model, event.version))
        if self.ledger is not None:
            try:
                self.ledger.append(record)
            except LedgerClosed as error:
                self._reject("closed", error)
                return
        key = (record.tenant, record.model)
        with self._lock:
            tally = self._usage.get(key)
            if tally is None:
                tally = self._usage[key] = _Tally()
            tally.requests += 1
            tally.items += record.items
            tally.device_seconds += record.device_seconds
            tally.epu += record.epu

    def snapshot(self) -> MeteringSnapshot:
        with self._lock:
            usage = {key: tally.usage() for key, tally in self._usage.items()}
            rejected = dict(self._rejected)
        return MeteringSnapshot(usage, rejected, None if self.ledger is None else self.ledger.stats())

    def flush(self) -> int:
        """Commit every event recorded so far to the ledger; the number committed."""
        return 0 if self.ledger is None else self.ledger.flush()

    def close(self) -> None:
        """Commit and close the ledger; later events are dropped (counted as ``closed``)."""
        if self.ledger is not None:
            self.ledger.close()

    def _factor(self, model: str, version: str) -> float:
        try:
            factor = self._efficiency_of(model, version)
        except Exception as error:
            self._warn_once(
                (model, version),
                "efficiency look-up for %s/%s failed (%r); counting 1.0",
                model,
                version,
                error,
            )
            return DEFAULT_EFFICIENCY
        if not is_valid_factor(factor):
            self._warn_once(
                (model, version), "efficiency factor of %s/%s is %r; counting 1.0", model, version, factor
            )
            return DEFAULT_EFFICIENCY
        return float(factor)

    def _reject(self, reason: str, error: Exception) -> None:
        with self._lock:
            self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self._warn_once(reason, "usage event dropped (%s): %s", reason, error)

    def _warn_once(self, key: object, message: str, *args: object) -> None:
        with self._lock:
            first = key not in self._warned
            self._warned.add(key)
        if first:
            log.warning(message, *args)
        else:
            log.debug(message, *args)
