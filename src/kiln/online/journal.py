"""The online loop's journal: one JSON line per version and outcome, per model, at
``REPO/.kiln/online/<model>.jsonl``.

A line says what became of a version: ``serving`` (with when it was published, its gate result,
the cache's build path and seconds, and when it started serving), ``rejected`` (the gate's
reason) or ``failed`` (its build or load). Times ending ``_s`` are Unix seconds; ``*_seconds``
durations. Lines are appended and flushed one at a time, so a crash loses at most the line being
written (and a reader skips a torn last line).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import orjson

from kiln.repository.layout import STATE_DIR

JOURNAL_DIR = "online"


def journal_path(repo: Path, model: str) -> Path:
    """Where the journal of ``model`` in the repository ``repo`` lives."""
    return Path(repo) / STATE_DIR / JOURNAL_DIR / f"{model}.jsonl"


class Journal:
    """Appends lines to the journals under ``repo`` (thread-safe)."""

    def __init__(self, repo: Path) -> None:
        self.repo = Path(repo)
        self._lock = threading.Lock()

    def append(self, model: str, line: dict[str, Any]) -> None:
        path = journal_path(self.repo, model)
        data = orjson.dumps({"model": model, **line}, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())

    def read(self, model: str) -> list[dict[str, Any]]:
        return read_journal(journal_path(self.repo, model))


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every complete line of the journal at ``path`` (none when it does not exist)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = []
    for text in raw.splitlines():
        try:
            lines.append(orjson.loads(text))
        except orjson.JSONDecodeError:
            continue  # a line torn by a crash
    return lines
