from __future__ import annotations

import math
import threading

import pytest

from kiln.errors import ConfigError
from kiln.metering.epu import EfficiencyTable, InvalidUsage, charge, check_event, is_valid_factor
from kiln.metering.usage import UsageEvent


def event(**changes: object) -> UsageEvent:
    fields: dict[str, object] = {
        "timestamp_s": 1_800_000_000.0,
        "tenant": "acme",
        "model": "ctr",
        "version": "3",
        "items": 4,
        "device_seconds": 0.002,
    }
    fields.update(changes)
    return UsageEvent(**fields)  # type: ignore[arg-type]


def test_epu_is_device_seconds_times_the_factor() -> None:
    record = charge(event(device_seconds=0.5), 2.5)
    assert record.epu == 1.25
    assert (record.tenant, record.model, record.version, record.items) == ("acme", "ctr", "3", 4)
    assert record.device_seconds == 0.5


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"tenant": ""}, "tenant"),
        ({"model": ""}, "model"),
        ({"version": ""}, "version"),
        ({"items": -1}, "items must be a whole number"),
        ({"items": 2.5}, "items must be a whole number"),
        ({"device_seconds": "0.1"}, "must be numbers"),
        ({"timestamp_s": None}, "must be numbers"),
        ({"device_seconds": -0.1}, "device_seconds"),
        ({"device_seconds": math.nan}, "device_seconds"),
        ({"timestamp_s": math.inf}, "timestamp"),
    ],
)
def test_an_event_that_cannot_be_metered_is_named(changes: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidUsage, match=named):
        check_event(event(**changes))


def test_a_valid_event_passes() -> None:
    check_event(event(items=0, device_seconds=0.0))


@pytest.mark.parametrize(
    ("factor", "valid"),
    [
        (1.0, True),
        (3, True),
        (0.0, False),
        (-1.0, False),
        (math.inf, False),
        (math.nan, False),
        (True, False),
    ],
)
def test_valid_factors_are_finite_and_positive(factor: object, valid: bool) -> None:
    assert is_valid_factor(factor) is valid


def test_efficiency_table_counts_unknown_versions_as_one() -> None:
    table = EfficiencyTable()
    table.set("ctr", "3", 2.0)
    table.set("ctr", "4", None)
    assert table("ctr", "3") == 2.0
    assert table("ctr", "4") == 1.0
    assert table("cnn", "1") == 1.0
    table.forget("ctr", "3")
    assert table("ctr", "3") == 1.0


def test_efficiency_table_forgets_every_version_of_a_model() -> None:
    table = EfficiencyTable()
    table.set("ctr", "1", 2.0)
    table.set("ctr", "2", 3.0)
    table.set("cnn", "1", 4.0)
    table.forget("ctr")
    assert (table("ctr", "1"), table("ctr", "2"), table("cnn", "1")) == (1.0, 1.0, 4.0)


def test_efficiency_table_refuses_a_bad_factor_and_keeps_the_old_one() -> None:
    table = EfficiencyTable()
    table.set("ctr", "1", 2.0)
    with pytest.raises(ConfigError, match=r"ctr/1.*seen: -3.0.*kiln bench"):
        table.set("ctr", "1", -3.0)
    assert table("ctr", "1") == 2.0


def test_efficiency_table_is_thread_safe() -> None:
    table = EfficiencyTable()

    def writer(n: int) -> None:
        for i in range(500):
            table.set("m", f"{n}-{i}", 1.0 + i)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(table("m", f"{n}-499") == 500.0 for n in range(4))
