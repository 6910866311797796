"""Usage reports: totals per tenant (or model, or model version) over a time range, with costs under
a per-device-hour price and under a per-EPU price side by side. Pure functions plus one reader.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal, TypeAlias, get_args

from kiln.errors import ConfigError, describe
from kiln.metering.buckets import Usage, UsageKey
from kiln.metering.ledger_db import read_usage

GroupBy: TypeAlias = Literal["tenant", "model", "version"]
GROUP_BYS: tuple[str, ...] = get_args(GroupBy)

TIME_FORMATS = (
    "a date (2026-11-01), a date and time (2026-11-01T12:30, 2026-11-01T12:30:00+02:00; UTC unless an "
    "offset is given), or a time back from now (90s, 30m, 1h, 7d, 2w)"
)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def parse_time(text: str, *, now_s: float, option: str = "--since") -> float:
    """Unix seconds for ``text``: a date or date-time (UTC unless it carries an offset) or a
    duration back from ``now_s``. ``ConfigError`` naming the accepted formats otherwise."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return now_s - float(relative.group(1)) * _UNIT_S[relative.group(2)]
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            describe(f"{option} is not a time kiln understands", seen=text, fix=TIME_FORMATS)
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Prices:
    """``per_device_hour``: price of one device-hour. ``per_epu``: price of one EPU (one
    device-second at efficiency 1.0, so ``per_device_hour / 3600`` charges such an engine alike)."""

    per_device_hour: float | None = None
    per_epu: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("device-hour", self.per_device_hour), ("EPU", self.per_epu)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(
                    describe(f"the price per {name} must be a finite number >= 0", seen=value, fix="e.g. 2.5")
                )


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One group's totals and costs (None where no price was given)."""

    group: str
    usage: Usage
    cost_device_hours: float | None
    cost_epu: float | None

    def to_json(self, by: str = "group") -> dict[str, object]:
        return {
            by: self.group,
            **self.usage.to_json(),
            "cost_device_hours": self.cost_device_hours,
            "cost_epu": self.cost_epu,
        }


@dataclass(frozen=True, slots=True)
class UsageReport:
    by: GroupBy
    since_s: float | None
    until_s: float | None
    prices: Prices
    lines: tuple[UsageLine, ...]
    total: UsageLine

    def to_json(self) -> dict[str, object]:
        return {
            "by": self.by,
            "since": _iso(self.since_s),
            "until": _iso(self.until_s),
            "price_per_device_hour": self.prices.per_device_hour,
            "price_per_epu": self.prices.per_epu,
            "rows": [line.to_json(self.by) for line in self.lines],
            "total": {k: v for k, v in self.total.to_json().items() if k != "group"},
        }


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def group_of(key: UsageKey, by: GroupBy) -> str:
    if by == "tenant":
        return key.tenant
    if by == "model":
        return key.model
    return f"{key.model}/{key.version}"


def summarize(usage: Mapping[UsageKey, Usage], by: GroupBy) -> list[tuple[str, Usage]]:
    """Totals per tenant, model or ``model/version``, sorted by group name."""
    if by not in GROUP_BYS:
        raise ConfigError(describe("unknown grouping", seen=by, fix=f"use one of {', '.join(GROUP_BYS)}"))
    groups: dict[str, Usage] = {}
    for key, totals in usage.items():
        name = group_of(key, by)
        groups[name] = groups.get(name, Usage()) + totals
    return sorted(groups.items())


def cost(usage: Usage, prices: Prices) -> tuple[float | None, float | None]:
    """(cost at the device-hour price, cost at the EPU price); None for a price not given."""
    by_hours = (
        None if prices.per_device_hour is None else usage.device_seconds / 3600 * prices.per_device_hour
    )
    by_epu = None if prices.per_epu is None else usage.epu * prices.per_epu
    return by_hours, by_epu


def build_report(
    usage: Mapping[UsageKey, Usage],
    *,
    by: GroupBy,
    prices: Prices,
    since_s: float | None = None,
    until_s: float | None = None,
) -> UsageReport:
    lines = tuple(UsageLine(name, totals, *cost(totals, prices)) for name, totals in summarize(usage, by))
    total = sum((line.usage for line in lines), Usage())
    return UsageReport(by, since_s, until_s, prices, lines, UsageLine("total", total, *cost(total, prices)))


def usage_report(
    ledger: Path | str,
    *,
    by: GroupBy,
    prices: Prices,
    since_s: float | None = None,
    until_s: float | None = None,
) -> UsageReport:
    """Read a ledger file (read-only; a running server may keep writing it) and report on it."""
    if since_s is not None and until_s is not None and until_s <= since_s:
        raise ConfigError(
            describe("--until must be later than --since", seen=f"{_iso(since_s)} .. {_iso(until_s)}")
        )
    usage = read_usage(ledger, since_s=since_s, until_s=until_s)
    return build_report(usage, by=by, prices=prices, since_s=since_s, until_s=until_s)
