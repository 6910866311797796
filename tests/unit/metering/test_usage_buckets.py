from __future__ import annotations

import pytest

from kiln.errors import ConfigError
from kiln.metering.buckets import Usage, UsageKey, aggregate, bucket_start, check_bucket_s, merge
from kiln.metering.epu import UsageRecord


def record(
    t: float, tenant: str = "acme", version: str = "1", items: int = 2, device_s: float = 0.5
) -> UsageRecord:
    return UsageRecord(t, tenant, "ctr", version, items, device_s, device_s * 2)


def test_bucket_start_floors_to_the_bucket() -> None:
    assert bucket_start(1_000_059.9, 60) == 1_000_020
    assert bucket_start(1_000_020.0, 60) == 1_000_020
    assert bucket_start(7.5, 1) == 7


def test_records_add_up_per_bucket_and_key() -> None:
    totals = aggregate(
        [
            record(120.0),
            record(150.0),
            record(179.9, tenant="globex"),
            record(180.0),
            record(121.0, version="2"),
        ],
        60,
    )
    assert totals[(120, UsageKey("acme", "ctr", "1"))] == Usage(2, 4, 1.0, 2.0)
    assert totals[(120, UsageKey("globex", "ctr", "1"))] == Usage(1, 2, 0.5, 1.0)
    assert totals[(120, UsageKey("acme", "ctr", "2"))] == Usage(1, 2, 0.5, 1.0)
    assert totals[(180, UsageKey("acme", "ctr", "1"))] == Usage(1, 2, 0.5, 1.0)
    assert len(totals) == 4


def test_aggregate_into_and_merge_add_in_place() -> None:
    into = aggregate([record(0.0)], 60)
    aggregate([record(1.0)], 60, into=into)
    merge(into, aggregate([record(2.0), record(61.0)], 60))
    assert into[(0, UsageKey("acme", "ctr", "1"))].requests == 3
    assert into[(60, UsageKey("acme", "ctr", "1"))].requests == 1


def test_usage_adds_and_serialises() -> None:
    total = Usage(1, 2, 0.5, 1.0) + Usage(2, 3, 0.25, 0.5)
    assert total == Usage(3, 5, 0.75, 1.5)
    assert total.to_json() == {"requests": 3, "items": 5, "device_seconds": 0.75, "epu": 1.5}


@pytest.mark.parametrize("bucket_s", [0, -1, 3601, 7, 1.5, True])
def test_bad_bucket_widths_are_refused(bucket_s: object) -> None:
    with pytest.raises(ConfigError, match="bucket_s"):
        check_bucket_s(bucket_s)  # type: ignore[arg-type]


@pytest.mark.parametrize("bucket_s", [1, 5, 60, 300, 3600])
def test_bucket_widths_dividing_an_hour_are_accepted(bucket_s: int) -> None:
    assert check_bucket_s(bucket_s) == bucket_s
