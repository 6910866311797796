"""Metering: per-request usage (requests, items, device-seconds, EPU) per tenant, in a SQLite ledger.

The server calls ``Metering.record(UsageEvent)`` once per served request; ``kiln usage`` reads the
ledger. See ``docs/metering.md``.
"""

from kiln.metering.buckets import Usage, UsageKey
from kiln.metering.epu import DEFAULT_EFFICIENCY, EfficiencyTable, InvalidUsage, UsageRecord
from kiln.metering.ledger import LedgerClosed, LedgerError, LedgerStats, UsageLedger
from kiln.metering.ledger_db import read_usage
from kiln.metering.meter import Metering, MeteringSnapshot
from kiln.metering.report import Prices, UsageReport, parse_time, usage_report
from kiln.metering.usage import Meter, NullMeter, UsageEvent

__all__ = [
    "DEFAULT_EFFICIENCY",
    "EfficiencyTable",
    "InvalidUsage",
    "LedgerClosed",
    "LedgerError",
    "LedgerStats",
    "Meter",
    "Metering",
    "MeteringSnapshot",
    "NullMeter",
    "Prices",
    "Usage",
    "UsageEvent",
    "UsageKey",
    "UsageLedger",
    "UsageRecord",
    "UsageReport",
    "parse_time",
    "read_usage",
    "usage_report",
]
