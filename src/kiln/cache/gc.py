"""Garbage collection: stale temporary folders out, least recently used entries evicted to a budget.

Every key present is locked (without waiting) before anything is deleted. A key whose lock is held
elsewhere is being built or served right now: its entries and temporary folders are left alone,
even if that leaves the cache above its budget.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from kiln.cache.entry import CacheEntry, is_hex
from kiln.cache.store import TEMP_DIR, EngineStore
from kiln.errors import ConfigError, describe

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "k": 2**10,
    "kib": 2**10,
    "m": 2**20,
    "mib": 2**20,
    "g": 2**30,
    "gib": 2**30,
    "t": 2**40,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_byte_size(text: str) -> int:
    """``500MB`` -> 500_000_000, ``2GiB`` -> 2 * 2**30, ``1024`` -> 1024.

    ``KB/MB/GB/TB`` are powers of 1000; ``KiB/MiB/GiB/TiB`` and the bare ``K/M/G/T`` powers of 1024.
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(
            describe("not a byte size", seen=text, fix="write a number with an optional unit: 500MB, 2GiB")
        )
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class EvictionPlan:
    """Entries to delete, oldest use first, so that the rest fits ``max_bytes``."""

    evict: tuple[CacheEntry, ...]
    skipped_locked: tuple[CacheEntry, ...]
    total_bytes: int
    remaining_bytes: int


def plan_eviction(
    entries: Sequence[CacheEntry], max_bytes: int | None, locked_keys: Iterable[str] = ()
) -> EvictionPlan:
    """Least recently used first, skipping entries whose key is locked, until the total fits."""
    locked = frozenset(locked_keys)
    total = sum(e.size_bytes for e in entries)
    remaining = total
    evict: list[CacheEntry] = []
    skipped: list[CacheEntry] = []
    for entry in sorted(entries, key=lambda e: (e.last_used, e.key, e.weights_dir)):
        if max_bytes is None or remaining <= max_bytes:
            break
        if entry.key in locked:
            skipped.append(entry)
            continue
        evict.append(entry)
        remaining -= entry.size_bytes
    return EvictionPlan(tuple(evict), tuple(skipped), total, remaining)


@dataclass(frozen=True)
class GcReport:
    """What ``collect_garbage`` removed and what is left."""

    removed: tuple[CacheEntry, ...]
    freed_bytes: int
    temp_removed: tuple[str, ...]
    temp_freed_bytes: int
    skipped_locked: tuple[CacheEntry, ...]
    remaining_bytes: int
    max_bytes: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "removed": [{"id": e.id, "key": e.key, "size_bytes": e.size_bytes} for e in self.removed],
            "freed_bytes": self.freed_bytes,
            "temp_removed": list(self.temp_removed),
            "temp_freed_bytes": self.temp_freed_bytes,
            "skipped_locked": [e.id for e in self.skipped_locked],
            "remaining_bytes": self.remaining_bytes,
            "max_bytes": self.max_bytes,
        }


def collect_garbage(store: EngineStore, max_bytes: int | None = None) -> GcReport:
    """Delete temporary folders no builder owns; with ``max_bytes``, evict LRU entries until the
    entries total at most ``max_bytes``. Entries of a key locked elsewhere are never touched."""
    if max_bytes is not None and max_bytes < 0:
        raise ConfigError(describe("max_bytes must be >= 0", seen=max_bytes))
    temps = _temp_folders(store)
    keys = {e.key for e in store.list_entries()} | {k for k in map(_temp_key, temps) if k}
    with ExitStack() as stack:
        held: set[str] = set()
        for key in sorted(keys):
            lock = store.try_lock(key)
            if lock is not None:
                stack.callback(lock.release)
                held.add(key)
        temp_removed, temp_bytes = _remove_temps(temps, held)
        entries = store.list_entries()
        plan = plan_eviction(entries, max_bytes, {e.key for e in entries} - held)
        for entry in plan.evict:
            store.remove(entry)
    return GcReport(
        removed=plan.evict,
        freed_bytes=plan.total_bytes - plan.remaining_bytes,
        temp_removed=tuple(temp_removed),
        temp_freed_bytes=temp_bytes,
        skipped_locked=plan.skipped_locked,
        remaining_bytes=plan.remaining_bytes,
        max_bytes=max_bytes,
    )


def _temp_folders(store: EngineStore) -> list[Path]:
    root = store.root / TEMP_DIR
    return sorted(root.iterdir()) if root.is_dir() else []


def _temp_key(path: Path) -> str | None:
    parts = path.name.split(".")
    if len(parts) >= 3 and parts[0] == "build" and len(parts[1]) == 64 and is_hex(parts[1]):
        return parts[1]
    return None


def _remove_temps(temps: Sequence[Path], held: set[str]) -> tuple[list[str], int]:
    removed: list[str] = []
    freed = 0
    for path in temps:
        key = _temp_key(path)
        if key is not None and key not in held:
            continue
        freed += _size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed, freed


def _size(path: Path) -> int:
    try:
        if not path.is_dir():
            return path.lstat().st_size
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return 0
