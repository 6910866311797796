"""Metering (the server's Meter) over a real ledger file whose commits a FakeClock drives."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln._clock import FakeClock
from kiln.metering.buckets import Usage, UsageKey
from kiln.metering.epu import EfficiencyTable
from kiln.metering.ledger import UsageLedger
from kiln.metering.ledger_db import read_usage
from kiln.metering.meter import Metering
from kiln.metering.usage import Meter, UsageEvent

T0 = 1_800_000_000.0


def event(version: str = "1", tenant: str = "acme", device_s: float = 0.5, items: int = 3) -> UsageEvent:
    return UsageEvent(T0, tenant, "ctr", version, items, device_s)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[UsageLedger]:
    ledger = UsageLedger(tmp_path / "u.db", clock=FakeClock(), background=False)
    yield ledger
    ledger.close()


def test_metering_is_a_meter(ledger: UsageLedger) -> None:
    meter: Meter = Metering(ledger)
    meter.record(event())


def test_record_charges_epu_at_the_engines_factor(ledger: UsageLedger) -> None:
    table = EfficiencyTable()
    table.set("ctr", "2", 4.0)
    metering = Metering(ledger, efficiency_of=table)
    metering.record(event("1"))
    metering.record(event("2"))
    assert metering.flush() == 2
    assert ledger.query() == {
        UsageKey("acme", "ctr", "1"): Usage(1, 3, 0.5, 0.5),  # not measured: counts 1.0
        UsageKey("acme", "ctr", "2"): Usage(1, 3, 0.5, 2.0),
    }


def test_record_never_writes_the_file_on_the_callers_thread(ledger: UsageLedger) -> None:
    metering = Metering(ledger)
    for _ in range(100):
        metering.record(event())
    assert read_usage(ledger.path) == {}
    assert ledger.stats().pending_events == 100
    assert metering.snapshot().usage[("acme", "ctr")].requests == 100


def test_totals_per_tenant_and_model_for_metrics(ledger: UsageLedger) -> None:
    metering = Metering(ledger, efficiency_of=lambda model, version: 2.0)
    metering.record(event(tenant="acme"))
    metering.record(event(tenant="acme", version="2"))
    metering.record(event(tenant="globex", device_s=1.0, items=1))
    snap = metering.snapshot()
    assert snap.usage == {("acme", "ctr"): Usage(2, 6, 1.0, 2.0), ("globex", "ctr"): Usage(1, 1, 1.0, 2.0)}
    assert snap.ledger is not None
    assert snap.ledger.pending_events == 3


@pytest.mark.parametrize("factor", [0.0, -2.0, math.nan, math.inf])
def test_a_bad_factor_counts_one(
    ledger: UsageLedger, factor: float, caplog: pytest.LogCaptureFixture
) -> None:
    metering = Metering(ledger, efficiency_of=lambda model, version: factor)
    with caplog.at_level(logging.WARNING, logger="kiln.metering"):
        metering.record(event())
        metering.record(event())
    assert metering.snapshot().usage[("acme", "ctr")].epu == 1.0
    assert sum("counting 1.0" in r.getMessage() for r in caplog.records) == 1  # once per version


def test_a_failing_lookup_counts_one(ledger: UsageLedger) -> None:
    def lookup(model: str, version: str) -> float:
        raise KeyError(version)

    metering = Metering(ledger, efficiency_of=lookup)
    metering.record(event())
    assert metering.snapshot().usage[("acme", "ctr")].epu == 0.5


def test_invalid_events_are_dropped_counted_and_logged(
    ledger: UsageLedger, caplog: pytest.LogCaptureFixture
) -> None:
    metering = Metering(ledger)
    with caplog.at_level(logging.WARNING, logger="kiln.metering"):
        metering.record(event(device_s=-1.0))
        metering.record(event(items=-1))
        metering.record(event())
    snap = metering.snapshot()
    assert snap.rejected == {"invalid": 2}
    assert snap.usage[("acme", "ctr")].requests == 1
    assert any("device_seconds" in r.getMessage() for r in caplog.records)
    assert metering.flush() == 1


def test_events_after_close_are_dropped_not_raised(ledger: UsageLedger) -> None:
    metering = Metering(ledger)
    metering.record(event())
    metering.close()
    metering.record(event())
    assert metering.snapshot().rejected == {"closed": 1}
    assert read_usage(ledger.path)[UsageKey("acme", "ctr", "1")].requests == 1


def test_without_a_ledger_only_totals_are_kept() -> None:
    metering = Metering()
    metering.record(event())
    assert metering.flush() == 0
    assert metering.snapshot().ledger is None
    assert metering.snapshot().usage[("acme", "ctr")].requests == 1
    metering.close()


def test_open_creates_the_ledger(tmp_path: Path) -> None:
    metering = Metering.open(tmp_path / "x" / "u.db", efficiency_of=lambda model, version: 3.0)
    metering.record(event())
    metering.close()
    assert read_usage(tmp_path / "x" / "u.db")[UsageKey("acme", "ctr", "1")].epu == 1.5


def test_concurrent_records_add_up(ledger: UsageLedger) -> None:
    metering = Metering(ledger)

    def hammer(n: int) -> None:
        for _ in range(1000):
            metering.record(event(tenant=f"t{n % 2}"))

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert metering.flush() == 4000
    assert {k: u.requests for k, u in metering.snapshot().usage.items()} == {
        ("t0", "ctr"): 2000,
        ("t1", "ctr"): 2000,
    }
    assert sum(u.requests for u in ledger.query().values()) == 4000
