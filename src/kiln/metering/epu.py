"""EPU arithmetic: checking a usage event, and turning device-seconds into equivalent processing units.

EPU = device-seconds x the efficiency factor of the engine that served the request. The factor
says how many reference device-seconds one device-second of this engine is worth; ``kiln bench``
measures it and stores it in the engine's manifest (``Manifest.efficiency_factor``). An engine
without a measured factor counts 1.0: its device-seconds are billed as they are.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from kiln.errors import ConfigError, KilnError, describe
from kiln.metering.usage import UsageEvent

DEFAULT_EFFICIENCY = 1.0
"""The factor of an engine nobody has measured yet."""

EfficiencyLookup: TypeAlias = Callable[[str, str], float]
"""``efficiency_of(model, version) -> factor``. Called once per recorded event, so it must be cheap
(a dictionary look-up, never a file read)."""


class InvalidUsage(KilnError):
    """A usage event that cannot be metered (negative or non-finite amounts, a missing name)."""


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One metered request: the event plus the EPU it was charged (requests = 1)."""

    timestamp_s: float
    tenant: str
    model: str
    version: str
    items: int
    device_seconds: float
    epu: float


def check_event(event: UsageEvent) -> None:
    """Raise ``InvalidUsage`` naming the field and value when ``event`` cannot be metered."""
    if _is_plainly_valid(event):
        return
    for name in ("tenant", "model", "version"):
        value = getattr(event, name)
        if not isinstance(value, str) or not value:
            raise InvalidUsage(describe(f"usage event without a {name}", seen=value, fix=f"give the {name}"))
    if not (_is_number(event.timestamp_s) and _is_number(event.device_seconds)):
        raise InvalidUsage(describe("usage event times must be numbers", seen=event, fix="pass floats"))
    if not math.isfinite(event.timestamp_s) or event.timestamp_s < 0:
        raise InvalidUsage(
            describe(
                "usage event timestamp is not a Unix time", seen=event.timestamp_s, fix="use time.time()"
            )
        )
    if isinstance(event.items, bool) or not isinstance(event.items, int) or event.items < 0:
        raise InvalidUsage(
            describe("usage event items must be a whole number >= 0", seen=event.items, fix="count rows >= 0")
        )
    if not math.isfinite(event.device_seconds) or event.device_seconds < 0:
        raise InvalidUsage(
            describe(
                "usage event device_seconds must be finite and >= 0",
                seen=event.device_seconds,
                fix="pass the request's share of its batch's compute time",
            )
        )


def _is_plainly_valid(event: UsageEvent) -> bool:
    """The common case, checked in one expression (the request path calls this per request):
    non-empty names, a whole item count >= 0, finite float times >= 0."""
    timestamp, seconds, items = event.timestamp_s, event.device_seconds, event.items
    return (
        type(event.tenant) is str
        and type(event.model) is str
        and type(event.version) is str
        and bool(event.tenant and event.model and event.version)
        and type(items) is int
        and items >= 0
        and type(timestamp) is float
        and type(seconds) is float
        and 0.0 <= timestamp < math.inf
        and 0.0 <= seconds < math.inf
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_valid_factor(factor: object) -> bool:
    return isinstance(factor, int | float) and _is_number(factor) and math.isfinite(factor) and factor > 0


def charge(event: UsageEvent, factor: float) -> UsageRecord:
    """The record of ``event`` served by an engine of efficiency ``factor`` (EPU = device-s x factor)."""
    return UsageRecord(
        timestamp_s=event.timestamp_s,
        tenant=event.tenant,
        model=event.model,
        version=event.version,
        items=event.items,
        device_seconds=event.device_seconds,
        epu=event.device_seconds * factor,
    )


class EfficiencyTable:
    """The efficiency factor of each served (model, version); thread-safe; unknown ones count 1.0.

    The code that loads a version sets its factor from the engine's manifest
    (``table.set(model, version, manifest.efficiency_factor)``); pass the table itself as
    ``Metering(efficiency_of=table)``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._factors: dict[tuple[str, str], float] = {}

    def set(self, model: str, version: str, factor: float | None) -> None:
        """Set the factor (``None``: not measured, counts 1.0). ``ConfigError`` unless finite and > 0."""
        if factor is not None and not is_valid_factor(factor):
            raise ConfigError(
                describe(
                    f"efficiency factor of {model}/{version} must be a finite number > 0",
                    seen=factor,
                    fix="measure it again with `kiln bench`, or leave it unset (counts 1.0)",
                )
            )
        with self._lock:
            if factor is None:
                self._factors.pop((model, version), None)
            else:
                self._factors[(model, version)] = float(factor)

    def forget(self, model: str, version: str | None = None) -> None:
        """Drop one version's factor, or every version of ``model``."""
        with self._lock:
            for key in [k for k in self._factors if k[0] == model and version in (None, k[1])]:
                del self._factors[key]

    def __call__(self, model: str, version: str) -> float:
        with self._lock:
            return self._factors.get((model, version), DEFAULT_EFFICIENCY)
