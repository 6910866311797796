"""UsageLedger: metered requests, added up per time bucket, committed to a SQLite file every second.

``append`` only puts the record on an in-memory deque (no SQLite on the caller's thread). A writer
thread wakes every ``flush_interval_s``, adds what arrived into per-bucket totals and commits them
in one transaction. ``flush()`` commits everything appended so far before it returns; ``close()``
stops the writer and commits the rest.

Durability: whatever ``flush()`` acknowledged, and every record appended more than one
``flush_interval_s`` (plus the time of one commit) before the process died, is in the file, even
after ``kill -9``. On a power loss or OS crash, SQLite's ``synchronous=NORMAL`` may roll back the
last commits (never half of one). See ``kiln.metering.ledger_db`` for the schema.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from kiln._clock import SYSTEM_CLOCK, Clock
from kiln.errors import ConfigError, KilnError, describe
from kiln.metering import ledger_db
from kiln.metering.buckets import BucketKey, Usage, UsageKey, aggregate
from kiln.metering.epu import UsageRecord

log = logging.getLogger("kiln.metering")


class LedgerError(KilnError):
    """The ledger could not commit (disk full, file locked or removed); the records are kept in
    memory and retried on the next commit."""


class LedgerClosed(LedgerError):
    """A record was appended to a closed ledger."""


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """``pending_events``: appended, not yet committed. ``commits`` and ``write_errors`` count
    transactions that succeeded and failed."""

    pending_events: int
    committed_events: int
    commits: int
    write_errors: int


class UsageLedger:
    """A usage ledger in a SQLite file at ``path`` (created with its folder when missing).

    ``flush_interval_s``: longest time a record waits in memory. ``bucket_s``: width of a time
    bucket, fixed when the file is created (None: the file's, or 60 s for a new file).
    ``clock``: when commits are due; with ``background=False`` no writer thread runs and the
    owner (a test with a ``FakeClock``) calls :meth:`tick`.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        flush_interval_s: float = 1.0,
        bucket_s: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
        background: bool = True,
    ) -> None:
        if not (
            isinstance(flush_interval_s, int | float)
            and math.isfinite(flush_interval_s)
            and flush_interval_s > 0
        ):
            raise ConfigError(describe("flush_interval_s must be > 0", seen=flush_interval_s, fix="e.g. 1.0"))
        self.path = Path(path)
        self.flush_interval_s = float(flush_interval_s)
        self._conn, self.bucket_s = ledger_db.open_for_writing(self.path, bucket_s)
        self._clock = clock
        self._queue: deque[UsageRecord] = deque()
        self._append_lock = threading.Lock()
        self._write_lock = threading.Lock()  # the connection and the pending totals
        self._stats_lock = threading.Lock()  # the counts below
        self._pending: dict[BucketKey, Usage] = {}
        self._pending_events = 0
        self._committed_events = 0
        self._commits = 0
        self._write_errors = 0
        self._closed = False
        self._file_closed = False
        self._stop = threading.Event()
        self._next_due_s = clock.now() + self.flush_interval_s
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="kiln-usage-ledger", daemon=True)
            self._thread.start()

    def append(self, record: UsageRecord) -> None:
        """Queue one record for the next commit. Never touches the file; ``LedgerClosed`` after close."""
        with self._append_lock:
            if self._closed:
                raise LedgerClosed(
                    describe(f"usage ledger {self.path} is closed", fix="open a new UsageLedger")
                )
            self._queue.append(record)

    def tick(self) -> bool:
        """Commit what is pending if a commit is due by the clock; True when one was attempted.
        A failed commit is logged and counted, and its records wait for the next one."""
        now = self._clock.now()
        if now < self._next_due_s:
            return False
        self._next_due_s = now + self.flush_interval_s
        try:
            self._commit()
        except LedgerError:
            log.exception("usage ledger %s: commit failed; will retry", self.path)
        return True

    def flush(self) -> int:
        """Commit every record appended before this call; returns how many records it committed.
        ``LedgerError`` when the commit fails (the records stay pending)."""
        return self._commit()

    def query(self, *, since_s: float | None = None, until_s: float | None = None) -> dict[UsageKey, Usage]:
        """Committed totals per (tenant, model, version), from the bucket holding ``since_s``
        (Unix seconds) up to the buckets starting before ``until_s``."""
        with self._write_lock:
            if self._file_closed:
                raise LedgerClosed(
                    describe(f"usage ledger {self.path} is closed", fix="read it with read_usage()")
                )
            return ledger_db.select(self._conn, self.bucket_s, since_s, until_s)

    def stats(self) -> LedgerStats:
        """Counts for ``/metrics``; never waits for a commit in progress."""
        with self._stats_lock:
            return LedgerStats(
                pending_events=self._pending_events + len(self._queue),
                committed_events=self._committed_events,
                commits=self._commits,
                write_errors=self._write_errors,
            )

    def close(self) -> None:
        """Stop the writer thread, commit everything appended, close the file. Idempotent.
        ``LedgerError`` when the last commit fails (those records are lost; the error says how many)."""
        with self._append_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._commit()
        finally:
            with self._write_lock:
                self._conn.close()
                self._file_closed = True

    def __enter__(self) -> UsageLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(max(0.0, self._next_due_s - self._clock.now())):
            try:
                self.tick()
            except Exception:  # the writer must outlive any one bad commit
                log.exception("usage ledger %s: writer tick failed", self.path)

    def _commit(self) -> int:
        with self._write_lock:
            with self._stats_lock:
                with self._append_lock:
                    batch, self._queue = self._queue, deque()
                self._pending_events += len(batch)
            aggregate(batch, self.bucket_s, into=self._pending)
            if not self._pending:
                return 0
            try:
                ledger_db.write(self._conn, self._pending)
            except sqlite3.Error as error:
                with self._stats_lock:
                    self._write_errors += 1
                raise LedgerError(
                    describe(
                        f"usage ledger {self.path}: commit of {self._pending_events} record(s) failed",
                        seen=f"{type(error).__name__}: {error}",
                        fix="check the disk and the file's permissions; kiln retries every flush interval",
                    )
                ) from error
            self._pending = {}
            with self._stats_lock:
                committed = self._pending_events
                self._pending_events = 0
                self._committed_events += committed
                self._commits += 1
            return committed
