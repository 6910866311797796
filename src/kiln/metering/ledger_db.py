"""The ledger's SQLite file: schema (versioned), opening, one-transaction writes, range queries.

Schema version 1 (``PRAGMA user_version``)::

    meta(key, value)        kind = kiln-usage-ledger, bucket_s = <seconds>
    usage(bucket_start_s, tenant, model, version,       -- primary key
          requests, items, device_seconds, epu)

The file runs in WAL mode with ``synchronous=NORMAL``: a committed transaction survives the
process being killed; after a power loss or OS crash the last commits may be rolled back, never
half-applied. Several processes may write one ledger (SQLite serialises them; rows add up).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from kiln.errors import ConfigError, describe
from kiln.metering.buckets import DEFAULT_BUCKET_S, BucketKey, Usage, UsageKey, bucket_start, check_bucket_s

SCHEMA_VERSION = 1
LEDGER_KIND = "kiln-usage-ledger"
BUSY_TIMEOUT_MS = 10_000

_CREATE = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE usage (
        bucket_start_s INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        requests INTEGER NOT NULL,
        items INTEGER NOT NULL,
        device_seconds REAL NOT NULL,
        epu REAL NOT NULL,
        PRIMARY KEY (bucket_start_s, tenant, model, version)
    ) WITHOUT ROWID""",
)
_UPSERT = """
INSERT INTO usage (bucket_start_s, tenant, model, version, requests, items, device_seconds, epu)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (bucket_start_s, tenant, model, version) DO UPDATE SET
    requests = requests + excluded.requests,
    items = items + excluded.items,
    device_seconds = device_seconds + excluded.device_seconds,
    epu = epu + excluded.epu
"""
_SELECT = """
SELECT tenant, model, version, SUM(requests), SUM(items), SUM(device_seconds), SUM(epu)
FROM usage WHERE bucket_start_s >= ? AND bucket_start_s < ?
GROUP BY tenant, model, version ORDER BY tenant, model, version
"""


def _not_a_ledger(path: Path, seen: object) -> ConfigError:
    return ConfigError(
        describe(f"{path} is not a kiln usage ledger", seen=seen, fix="point at the server's ledger file")
    )


def _cannot_open(path: Path, error: Exception) -> ConfigError:
    return ConfigError(
        describe(
            f"cannot open the usage ledger {path}",
            seen=f"{type(error).__name__}: {error}",
            fix="check that its folder is writable, the disk not full, and no other program locks it",
        )
    )


def open_for_writing(path: Path, bucket_s: int | None) -> tuple[sqlite3.Connection, int]:
    """Open (creating it and its folder when missing) a ledger; returns the connection and its bucket.

    ``bucket_s`` None keeps the stored bucket (or the default for a new file); a value different from
    the stored one is a ``ConfigError``. The schema is created in one transaction.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
    except (OSError, sqlite3.Error) as error:
        raise _cannot_open(path, error) from None
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(
                describe(f"{path} cannot use WAL mode", seen=mode, fix="put it on a local disk")
            )
        conn.execute("PRAGMA synchronous=NORMAL")
        stored = _prepare(conn, path, bucket_s)
    except sqlite3.OperationalError as error:
        conn.close()
        raise _cannot_open(path, error) from None
    except sqlite3.DatabaseError as error:
        conn.close()
        raise _not_a_ledger(path, str(error)) from None
    except BaseException:
        conn.close()
        raise
    return conn, stored


def _prepare(conn: sqlite3.Connection, path: Path, bucket_s: int | None) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            if tables:
                raise _not_a_ledger(path, f"tables {sorted(t[0] for t in tables)}")
            chosen = check_bucket_s(DEFAULT_BUCKET_S if bucket_s is None else bucket_s)
            for statement in _CREATE:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("kind", LEDGER_KIND), ("bucket_s", str(chosen))],
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        else:
            chosen = _check_existing(conn, path, version, bucket_s)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return chosen


def _check_existing(conn: sqlite3.Connection, path: Path, version: int, bucket_s: int | None) -> int:
    if version > SCHEMA_VERSION:
        raise ConfigError(
            describe(
                f"ledger {path} has schema version {version}; this kiln reads up to {SCHEMA_VERSION}",
                fix="upgrade kiln",
            )
        )
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("kind") != LEDGER_KIND:
        raise _not_a_ledger(path, meta.get("kind"))
    stored = int(meta["bucket_s"])
    if bucket_s is not None and bucket_s != stored:
        raise ConfigError(
            describe(
                f"ledger {path} was created with {stored} s buckets, not {bucket_s} s",
                fix=f"open it with bucket_s={stored} (or None), or start a new ledger file",
            )
        )
    return stored


def write(conn: sqlite3.Connection, totals: Mapping[BucketKey, Usage]) -> None:
    """Add ``totals`` to the ledger in one transaction (all or nothing)."""
    rows = [
        (start, k.tenant, k.model, k.version, u.requests, u.items, u.device_seconds, u.epu)
        for (start, k), u in totals.items()
    ]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_UPSERT, rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def select(
    conn: sqlite3.Connection, bucket_s: int, since_s: float | None, until_s: float | None
) -> dict[UsageKey, Usage]:
    """Totals per (tenant, model, version) from the bucket holding ``since_s`` (included) to the
    buckets starting before ``until_s`` (None: no bound)."""
    low = -(2**62) if since_s is None else bucket_start(since_s, bucket_s)
    high = 2**62 if until_s is None else math.ceil(until_s)
    return {
        UsageKey(t, m, v): Usage(int(r), int(i), float(d), float(e))
        for t, m, v, r, i, d, e in conn.execute(_SELECT, (low, high))
    }


def read_usage(
    path: Path | str, *, since_s: float | None = None, until_s: float | None = None
) -> dict[UsageKey, Usage]:
    """Committed totals per (tenant, model, version) from a ledger file, opened read-only.

    Rows are whole buckets: the bucket holding ``since_s`` is included. ``ConfigError`` when the file
    is missing or not a ledger.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            describe("no usage ledger at this path", seen=str(path), fix="pass the server's --ledger")
        )
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            raise _not_a_ledger(path, "no kiln schema")
        bucket_s = _check_existing(conn, path, version, None)
        return select(conn, bucket_s, since_s, until_s)
    except sqlite3.DatabaseError as error:
        raise _not_a_ledger(path, str(error)) from None
    finally:
        conn.close()
