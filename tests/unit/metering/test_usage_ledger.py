"""UsageLedger on real SQLite files in a temporary folder; commits driven by a FakeClock."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from kiln._clock import FakeClock
from kiln.errors import ConfigError
from kiln.metering.buckets import Usage, UsageKey
from kiln.metering.epu import UsageRecord
from kiln.metering.ledger import LedgerClosed, LedgerError, UsageLedger
from kiln.metering.ledger_db import SCHEMA_VERSION, read_usage

T0 = 1_800_000_000.0  # a bucket boundary for 60 s buckets
KEY = UsageKey("acme", "ctr", "1")


def record(t: float = T0, tenant: str = "acme", items: int = 2, device_s: float = 0.25) -> UsageRecord:
    return UsageRecord(t, tenant, "ctr", "1", items, device_s, device_s * 3)


def manual(path: Path, clock: FakeClock, **kwargs: object) -> UsageLedger:
    return UsageLedger(path, clock=clock, background=False, **kwargs)  # type: ignore[arg-type]


def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_new_ledger_is_a_wal_file_with_normal_sync(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "usage.db"
    with manual(path, FakeClock()) as ledger:
        assert path.is_file()
        assert ledger.bucket_s == 60
        assert ledger._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_nothing_reaches_the_file_before_a_commit_is_due(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = manual(tmp_path / "u.db", clock, flush_interval_s=1.0)
    ledger.append(record())
    clock.advance(0.5)
    assert ledger.tick() is False
    assert read_usage(tmp_path / "u.db") == {}
    assert ledger.stats().pending_events == 1
    clock.advance(0.5)
    assert ledger.tick() is True
    assert read_usage(tmp_path / "u.db") == {KEY: Usage(1, 2, 0.25, 0.75)}
    assert ledger.stats().pending_events == 0
    ledger.close()


def test_ticks_commit_once_per_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = manual(tmp_path / "u.db", clock, flush_interval_s=1.0)
    clock.advance(1.0)
    assert ledger.tick() is True
    assert ledger.tick() is False
    ledger.append(record())
    clock.advance(1.0)
    assert ledger.tick() is True
    assert ledger.stats().commits == 1  # the empty tick wrote nothing
    ledger.close()


def test_flush_commits_everything_appended_and_says_how_much(tmp_path: Path) -> None:
    ledger = manual(tmp_path / "u.db", FakeClock())
    for i in range(5):
        ledger.append(record(T0 + i))
    assert ledger.flush() == 5
    assert ledger.flush() == 0
    assert ledger.query() == {KEY: Usage(5, 10, 1.25, 3.75)}
    ledger.close()


def test_close_commits_the_rest_and_the_file_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    ledger = manual(path, FakeClock())
    ledger.append(record())
    ledger.flush()
    ledger.append(record(T0 + 61))
    ledger.close()
    ledger.close()  # idempotent
    with pytest.raises(LedgerClosed, match="closed"):
        ledger.append(record())
    with pytest.raises(LedgerClosed):
        ledger.query()
    again = manual(path, FakeClock())
    assert again.query() == {KEY: Usage(2, 4, 0.5, 1.5)}
    again.append(record())
    again.close()
    assert read_usage(path)[KEY].requests == 3


def test_query_ranges_cover_whole_buckets(tmp_path: Path) -> None:
    with manual(tmp_path / "u.db", FakeClock()) as ledger:
        for t in (T0, T0 + 59, T0 + 60, T0 + 125):
            ledger.append(record(t))
        ledger.flush()
        assert ledger.query(since_s=T0 + 30)[KEY].requests == 4  # the bucket holding since is included
        assert ledger.query(since_s=T0 + 60)[KEY].requests == 2
        assert ledger.query(since_s=T0, until_s=T0 + 60)[KEY].requests == 2
        assert ledger.query(since_s=T0 + 180) == {}
    assert read_usage(tmp_path / "u.db", since_s=T0 + 61, until_s=T0 + 120)[KEY].requests == 1


def test_bucket_width_is_fixed_at_creation(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    manual(path, FakeClock(), bucket_s=1).close()
    with manual(path, FakeClock()) as ledger:
        assert ledger.bucket_s == 1
    with pytest.raises(ConfigError, match="created with 1 s buckets, not 60 s"):
        manual(path, FakeClock(), bucket_s=60)


def test_one_second_buckets_keep_seconds_apart(tmp_path: Path) -> None:
    with manual(tmp_path / "u.db", FakeClock(), bucket_s=1) as ledger:
        ledger.append(record(T0 + 0.2))
        ledger.append(record(T0 + 1.7))
        ledger.flush()
        assert ledger.query(since_s=T0 + 1)[KEY].requests == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    manual(path, FakeClock()).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="upgrade kiln"):
        manual(path, FakeClock())
    with pytest.raises(ConfigError, match="upgrade kiln"):
        read_usage(path)


def test_other_files_are_not_ledgers(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("hello, this is not a database" * 100)
    with pytest.raises(ConfigError, match="not a kiln usage ledger"):
        manual(text, FakeClock())
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match=r"not a kiln usage ledger.*\['t'\]"):
        manual(other, FakeClock())
    with pytest.raises(ConfigError, match="not a kiln usage ledger"):
        read_usage(other)
    with pytest.raises(ConfigError, match="no usage ledger"):
        read_usage(tmp_path / "missing.db")


def test_a_ledger_that_cannot_be_opened_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"cannot open the usage ledger .*a-file/u.db.*writable"):
        manual(blocker / "u.db", FakeClock())


@pytest.mark.parametrize("interval", [0, -1.0, float("nan")])
def test_bad_flush_interval_is_refused(tmp_path: Path, interval: float) -> None:
    with pytest.raises(ConfigError, match="flush_interval_s"):
        UsageLedger(tmp_path / "u.db", flush_interval_s=interval, background=False)


def test_a_failed_commit_keeps_the_records_for_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    clock = FakeClock()
    ledger = manual(path, clock)
    ledger.append(record())
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("ALTER TABLE usage RENAME TO usage_away")
    clock.advance(1.0)
    assert ledger.tick() is True  # logged, not raised
    ledger.append(record())
    with pytest.raises(LedgerError, match="commit of 2 record"):
        ledger.flush()
    assert ledger.stats().write_errors == 2
    assert ledger.stats().pending_events == 2
    other.execute("ALTER TABLE usage_away RENAME TO usage")
    other.close()
    assert ledger.flush() == 2
    assert ledger.query()[KEY].requests == 2
    ledger.close()


def test_the_writer_thread_commits_without_being_asked(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    with UsageLedger(path, flush_interval_s=0.05) as ledger:
        for i in range(10):
            ledger.append(record(T0 + i))
        wait_for(lambda: ledger.stats().committed_events == 10)
        assert read_usage(path)[KEY].requests == 10


def test_concurrent_appends_are_all_committed(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "u.db", flush_interval_s=0.01)

    def hammer(n: int) -> None:
        for i in range(500):
            ledger.append(record(T0 + i % 120, tenant=f"t{n}"))

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger.close()
    usage = read_usage(tmp_path / "u.db")
    assert sorted(usage) == [UsageKey(f"t{n}", "ctr", "1") for n in range(4)]
    assert all(u.requests == 500 for u in usage.values())


def test_two_writers_on_one_file_add_up(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    first, second = manual(path, FakeClock()), manual(path, FakeClock())
    first.append(record())
    second.append(record())
    first.flush()
    second.flush()
    assert read_usage(path)[KEY].requests == 2
    first.close()
    second.close()
