"""CacheEntry: one stored entry as found on disk, and how it is read (without verifying files)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kiln.cache.key import SHORT_LEN
from kiln.compile.backends.base import MANIFEST_NAME, Manifest

WEIGHTS_DIR_LEN = 16
"""Hex digits of the weights hash naming an entry's folder under its key folder."""
_HEX = frozenset("0123456789abcdef")


def is_hex(text: str) -> bool:
    return bool(text) and set(text) <= _HEX


@dataclass(frozen=True)
class CacheEntry:
    """One stored entry as found on disk. ``manifest`` is ``None`` when it could not be read
    (missing, not JSON, wrong schema, or not matching its folder); ``problem`` then says why."""

    key: str
    weights_dir: str
    path: Path
    size_bytes: int
    last_used: float
    manifest: Manifest | None
    problem: str | None = None

    @property
    def id(self) -> str:
        """``<key[:12]>/<weights[:8]>``: how tables show an entry and ``kiln cache rm`` takes it."""
        return f"{self.key[:SHORT_LEN]}/{self.weights_dir[:8]}"

    @property
    def weights_hash(self) -> str | None:
        if self.manifest is None:
            return None
        return str(self.manifest.fingerprint.get("weights_hash", "")) or None


def read_entry(key: str, path: Path) -> CacheEntry:
    """The entry in ``path`` as found: size, last use, and its manifest if it can be read."""
    manifest_path = path / MANIFEST_NAME
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    try:
        last_used = manifest_path.stat().st_mtime
    except OSError:
        last_used = path.stat().st_mtime
    manifest, problem = _parse_manifest(manifest_path)
    if manifest is not None:
        weights = str(manifest.fingerprint.get("weights_hash", ""))
        if manifest.key != key or not weights.startswith(path.name):
            problem = f"manifest names another entry: {manifest.key[:SHORT_LEN]}/{weights[:8]}"
            manifest = None
    return CacheEntry(key, path.name, path, size, last_used, manifest, problem)


def _parse_manifest(path: Path) -> tuple[Manifest | None, str | None]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{MANIFEST_NAME} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{MANIFEST_NAME} is not JSON ({err})"
    try:
        if not isinstance(data, dict):
            raise TypeError(f"top level is {type(data).__name__}")
        return Manifest.from_json(data), None
    except (KeyError, TypeError, ValueError, AssertionError, AttributeError) as err:
        return None, f"{MANIFEST_NAME} does not fit the manifest schema ({type(err).__name__}: {err})"
