"""Usage totals and their time buckets: the pure arithmetic under the ledger.

The ledger keeps one row per (bucket, tenant, model, version), not one per request: a bucket of
``bucket_s`` seconds (60 by default) adds up every request whose timestamp falls in it. A request
stays countable to the bucket, which is all billing and ``kiln usage`` need, and a server answering
thousands of requests a second writes a few rows a minute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from kiln.errors import ConfigError, describe
from kiln.metering.epu import UsageRecord

DEFAULT_BUCKET_S = 60
MAX_BUCKET_S = 3600


@dataclass(frozen=True, slots=True)
class Usage:
    """Totals over some requests. ``epu`` = sum of device-seconds x efficiency factor."""

    requests: int = 0
    items: int = 0
    device_seconds: float = 0.0
    epu: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.requests + other.requests,
            self.items + other.items,
            self.device_seconds + other.device_seconds,
            self.epu + other.epu,
        )

    @classmethod
    def of(cls, record: UsageRecord) -> Usage:
        return cls(1, record.items, record.device_seconds, record.epu)

    def to_json(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "items": self.items,
            "device_seconds": self.device_seconds,
            "epu": self.epu,
        }


@dataclass(frozen=True, slots=True, order=True)
class UsageKey:
    """Who used what: one tenant on one version of one model."""

    tenant: str
    model: str
    version: str


BucketKey: TypeAlias = tuple[int, UsageKey]
"""(bucket start in Unix seconds, key)."""


def check_bucket_s(bucket_s: int) -> int:
    """``bucket_s`` when it is a whole number of seconds in 1..3600 dividing an hour; else ``ConfigError``."""
    if isinstance(bucket_s, bool) or not isinstance(bucket_s, int) or not 1 <= bucket_s <= MAX_BUCKET_S:
        raise ConfigError(
            describe("bucket_s must be whole seconds in 1..3600", seen=bucket_s, fix="e.g. 1 or 60")
        )
    if MAX_BUCKET_S % bucket_s:
        raise ConfigError(
            describe("bucket_s must divide an hour", seen=bucket_s, fix="use 1, 5, 10, 15, 30, 60, 300, ...")
        )
    return bucket_s


def bucket_start(timestamp_s: float, bucket_s: int) -> int:
    """Start (Unix seconds) of the bucket holding ``timestamp_s``."""
    return math.floor(timestamp_s / bucket_s) * bucket_s


def aggregate(
    records: Iterable[UsageRecord], bucket_s: int, into: dict[BucketKey, Usage] | None = None
) -> dict[BucketKey, Usage]:
    """Add ``records`` into per-bucket totals (``into``, updated in place, or a new dict)."""
    totals: dict[BucketKey, Usage] = {} if into is None else into
    # Plain lists while summing (the writer runs this over a second's requests at once, holding
    # the interpreter lock: no object per record), then one Usage per bucket and key.
    sums: dict[tuple[int, str, str, str], list[float]] = {}
    for record in records:
        flat = (bucket_start(record.timestamp_s, bucket_s), record.tenant, record.model, record.version)
        found = sums.get(flat)
        if found is None:
            sums[flat] = [1, record.items, record.device_seconds, record.epu]
        else:
            found[0] += 1
            found[1] += record.items
            found[2] += record.device_seconds
            found[3] += record.epu
    for (start, tenant, model, version), (requests, items, seconds, epu) in sums.items():
        key = (start, UsageKey(tenant, model, version))
        usage = Usage(int(requests), int(items), seconds, epu)
        found_usage = totals.get(key)
        totals[key] = usage if found_usage is None else found_usage + usage
    return totals


def merge(into: dict[BucketKey, Usage], more: dict[BucketKey, Usage]) -> None:
    """Add ``more`` into ``into`` in place."""
    for key, usage in more.items():
        found = into.get(key)
        into[key] = usage if found is None else found + usage
