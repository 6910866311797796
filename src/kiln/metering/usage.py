"""The usage contract between the server and metering.

For every request that ran, the server hands metering one ``UsageEvent``: who (tenant), what (model,
version), how much (items = batch rows of this request) and the request's share of the batch's
device time (batch compute time x this request's rows / the batch's rows). Metering turns it into
EPU (device-seconds x the engine's efficiency factor) and appends it to its ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One served request's usage. ``timestamp_s`` is wall-clock (Unix) seconds."""

    timestamp_s: float
    tenant: str
    model: str
    version: str
    items: int
    device_seconds: float


class Meter(Protocol):
    """Receives usage events. ``record`` must not block the caller (buffer and write in background)."""

    def record(self, event: UsageEvent) -> None: ...


class NullMeter:
    """A meter that keeps nothing; used when metering is off."""

    def record(self, event: UsageEvent) -> None:
        del event
