"""The feedback store: events appended durably to one SQLite file, read back as a stream.

* **Durable before acknowledged.** The database runs in WAL mode with ``synchronous=FULL``: an
  ``append`` returns only after its transaction (one per batch) is in the write-ahead log and the log
  is fsynced, so an acknowledged event survives a crash of the process or of the machine.
* **A stream with offsets.** Every event gets an offset (SQLite's ``AUTOINCREMENT`` rowid: strictly
  increasing, never reused). Writers are serialised by SQLite, so a reader never sees offset 10
  before offset 9 is visible.
* **Consumers.** A trainer reads ``after`` its offset and commits the offset it has learned up to
  under its own name; several processes may open the same file (one writer at a time).
* **Joins.** A labelled event that carries only a ``request_id`` is read with the features of the
  first event of the same model and request id that has them (an impression logged earlier).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kiln.errors import ConfigError, describe
from kiln.feedback.events import FeedbackEvent, StoredEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    offset INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    label REAL,
    timestamp_s REAL NOT NULL,
    received_s REAL NOT NULL,
    request_id TEXT NOT NULL,
    features BLOB
);
CREATE INDEX IF NOT EXISTS events_by_model ON events (model, offset);
CREATE INDEX IF NOT EXISTS events_by_request ON events (model, request_id) WHERE request_id != '';
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY,
    offset INTEGER NOT NULL,
    committed_s REAL NOT NULL
);
"""

_READ = """
SELECT e.offset, e.model, e.label, e.timestamp_s, e.received_s, e.request_id,
       COALESCE(e.features, (
           SELECT f.features FROM events f
           WHERE f.model = e.model AND f.request_id = e.request_id AND e.request_id != ''
                 AND f.features IS NOT NULL
           ORDER BY f.offset LIMIT 1)) AS features
FROM events e
WHERE e.model = ? AND e.offset > ? {labelled}
ORDER BY e.offset LIMIT ?
"""

_HOLDOUT = """
SELECT * FROM ({select} ORDER BY e.offset DESC LIMIT ?) ORDER BY offset
"""

BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Offsets given to one appended batch (``first``..``last``, contiguous for one batch)."""

    first: int
    last: int
    count: int
    received_s: float


class FeedbackStore:
    """Feedback events in the SQLite file at ``path`` (created with its folder when missing).

    Safe to share between threads (one connection behind a lock); ``wall_clock`` gives the
    received time (Unix seconds) and is injectable for tests.
    """

    def __init__(self, path: Path, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                describe(
                    "cannot open the feedback store", seen=f"{path}: {exc}", fix="give a writable file path"
                )
            ) from None

    def append(self, events: Sequence[FeedbackEvent]) -> AppendResult:
        """Write ``events`` in one transaction; returns once they are durable (fsynced)."""
        received = self._wall_clock()
        rows = [
            (
                e.model,
                e.label,
                e.timestamp_s,
                received,
                e.request_id,
                orjson.dumps(dict(e.features)) if e.features else None,
            )
            for e in events
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO events (model, label, timestamp_s, received_s, request_id, features) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                last = int(self._db.execute("SELECT last_insert_rowid()").fetchone()[0]) if rows else 0
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        # One writer at a time (BEGIN IMMEDIATE) and AUTOINCREMENT: a batch's offsets are contiguous.
        first = last - len(rows) + 1 if rows else 0
        return AppendResult(first=first, last=last, count=len(rows), received_s=received)

    def read(
        self, model: str, after: int, *, limit: int = 1000, labelled_only: bool = False
    ) -> list[StoredEvent]:
        """Up to ``limit`` events of ``model`` with offsets above ``after``, in offset order."""
        sql = _READ.format(labelled="AND e.label IS NOT NULL" if labelled_only else "")
        with self._lock:
            rows = self._db.execute(sql, (model, after, limit)).fetchall()
        return [_stored(row) for row in rows]

    def read_holdout(self, model: str, *, every: int, limit: int) -> list[StoredEvent]:
        """The newest ``limit`` labelled events of ``model`` whose offset is a multiple of ``every``
        (the trainer's holdout: it never learns from them), oldest first."""
        where = "WHERE e.model = ? AND e.offset > ? AND e.label IS NOT NULL AND e.offset % ? = 0"
        select = _READ.replace("WHERE e.model = ? AND e.offset > ? {labelled}", where)
        select = select.replace("ORDER BY e.offset LIMIT ?", "")
        with self._lock:
            rows = self._db.execute(
                _HOLDOUT.format(select=select), (model, 0, max(every, 1), limit)
            ).fetchall()
        return [_stored(row) for row in rows]

    def commit(self, consumer: str, offset: int) -> None:
        """Record that ``consumer`` has processed everything up to ``offset`` (durably)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO consumers (name, offset, committed_s) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET "
                "offset = excluded.offset, committed_s = excluded.committed_s",
                (consumer, offset, self._wall_clock()),
            )

    def committed(self, consumer: str) -> int:
        """The offset ``consumer`` last committed (0: nothing yet)."""
        with self._lock:
            row = self._db.execute("SELECT offset FROM consumers WHERE name = ?", (consumer,)).fetchone()
        return int(row[0]) if row else 0

    def last_offset(self, model: str | None = None) -> int:
        """The newest offset (of ``model``, or of any model); 0 when empty."""
        with self._lock:
            if model is None:
                row = self._db.execute("SELECT MAX(offset) FROM events").fetchone()
            else:
                row = self._db.execute("SELECT MAX(offset) FROM events WHERE model = ?", (model,)).fetchone()
        return int(row[0] or 0)

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                row = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
            else:
                row = self._db.execute("SELECT COUNT(*) FROM events WHERE model = ?", (model,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    offset, model, label, timestamp_s, received_s, request_id, features = row
    event = FeedbackEvent(
        model=str(model),
        label=None if label is None else float(label),
        timestamp_s=float(timestamp_s),
        request_id=str(request_id),
        features=orjson.loads(features) if features else {},
    )
    return StoredEvent(offset=int(offset), received_s=float(received_s), event=event)
