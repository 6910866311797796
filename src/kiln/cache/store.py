"""EngineStore: the on-disk, content-addressed engine cache.

Layout under the root (``$KILN_CACHE_DIR`` or ``~/.cache/kiln/engines``)::

    <root>/<key>/<weights_hash[:16]>/   one entry: engine file(s) + manifest.json
    <root>/.locks/<key>.lock           one builder per key across processes (filelock)
    <root>/.tmp/build.<key>.<random>/  an entry being written; renamed into place when complete
    <root>/.tmp/trash.<random>/        an entry being deleted (renamed out first, then removed)

Entries of one key (same structure, spec and target) with different weights live side by side
under the key folder; a sibling is the base for a weight refit. An entry's last-used time is the
modification time of its ``manifest.json`` (set at commit, bumped on every hit); the manifest is
not part of the checksummed files, so touching it never invalidates an entry.

Methods that change entries expect the caller to hold the key's lock (:meth:`EngineStore.lock`);
``obtain_engine`` and ``collect_garbage`` do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import filelock

from kiln._clock import Clock
from kiln.cache.checksum import checksum_folder, verify_files
from kiln.cache.entry import WEIGHTS_DIR_LEN, CacheEntry, is_hex, read_entry
from kiln.cache.key import SHORT_LEN
from kiln.compile.backends.base import MANIFEST_NAME, EngineArtifact, Manifest
from kiln.errors import BuildError, CacheBusy, CacheCorrupt, describe

ENV_CACHE_DIR = "KILN_CACHE_DIR"
TEMP_DIR = ".tmp"
LOCK_DIR = ".locks"

__all__ = ["CacheBusy", "EngineStore", "WallClock", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$KILN_CACHE_DIR`` when set, else ``~/.cache/kiln/engines``."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kiln" / "engines"


class EngineStore:
    """A cache folder of engine artifacts. Cheap to create; touches the disk only when used.

    ``wall_clock`` gives wall-clock seconds (``time.time``) for created/last-used times, which outlive
    the process; tests pass a fake.
    """

    def __init__(self, root: Path | None = None, *, wall_clock: Clock | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._wall: Clock = wall_clock or WallClock()

    def now(self) -> float:
        return self._wall.now()

    # -- locking -----------------------------------------------------------------------------

    def lock_path(self, key: str) -> Path:
        return self.root / LOCK_DIR / f"{_checked_key(key)}.lock"

    @contextmanager
    def lock(self, key: str, *, timeout_s: float | None = None) -> Iterator[None]:
        """Hold the key's builder lock; wait up to ``timeout_s`` (``None``: as long as it takes).

        Raises ``CacheBusy`` naming the lock file when the wait runs out.
        """
        path = self.lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(path, timeout=-1 if timeout_s is None else timeout_s)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise CacheBusy(
                describe(
                    f"cache key {key[:SHORT_LEN]} is locked by another builder",
                    seen=f"still locked after {timeout_s} s: {path}",
                    fix="wait for that build to finish, or retry with a longer timeout",
                )
            ) from None
        try:
            yield
        finally:
            lock.release()

    def try_lock(self, key: str) -> filelock.BaseFileLock | None:
        """The key's lock, acquired without waiting, or ``None`` when someone holds it."""
        path = self.lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(path, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            return None
        return lock

    # -- reading -----------------------------------------------------------------------------

    def entry_path(self, key: str, weights_hash: str) -> Path:
        if len(weights_hash) < WEIGHTS_DIR_LEN or not is_hex(weights_hash):
            raise ValueError(f"a weights hash is a hex digest, seen {weights_hash!r}")
        return self.root / _checked_key(key) / weights_hash[:WEIGHTS_DIR_LEN]

    def entries(self, key: str) -> list[CacheEntry]:
        """Every entry of ``key`` (all weights), readable or not, oldest use first."""
        folder = self.root / _checked_key(key)
        try:
            listing = sorted(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        found: list[CacheEntry] = []
        for path in listing:
            try:
                if _is_weights_dir(path):
                    found.append(read_entry(key, path))
            except FileNotFoundError:  # removed while we looked: it is gone, not corrupt
                continue
        return sorted(found, key=lambda e: (e.last_used, e.weights_dir))

    def list_entries(self) -> list[CacheEntry]:
        """Every entry in the store, oldest use first."""
        if not self.root.is_dir():
            return []
        keys = [p.name for p in sorted(self.root.iterdir()) if p.is_dir() and _is_key(p.name)]
        found = [e for key in keys for e in self.entries(key)]
        return sorted(found, key=lambda e: (e.last_used, e.key, e.weights_dir))

    def lookup(self, key: str, weights_hash: str) -> CacheEntry | None:
        """The entry of ``key`` built from exactly these weights, if stored (not yet verified)."""
        path = self.entry_path(key, weights_hash)
        return read_entry(key, path) if path.is_dir() else None

    def structure_matches(self, key: str, weights_hash: str) -> list[CacheEntry]:
        """Readable entries of ``key`` built from other weights: refit candidates."""
        return [e for e in self.entries(key) if e.manifest is not None and e.weights_hash != weights_hash]

    def open(self, entry: CacheEntry, *, keep_engine: bool = False) -> EngineArtifact:
        """The entry's artifact after recomputing every checksum. ``CacheCorrupt`` on any mismatch,
        an unreadable manifest, or a manifest without its engine file. ``keep_engine``: the
        artifact carries the engine file's verified bytes (``engine_bytes``), for a refit."""
        if entry.manifest is None:
            raise CacheCorrupt(
                describe(f"cache entry {entry.path} has no readable manifest", seen=entry.problem)
            )
        manifest = entry.manifest
        if manifest.engine_file not in manifest.files:
            raise CacheCorrupt(
                describe(f"cache entry {entry.path} does not list its engine file", seen=manifest.engine_file)
            )
        kept = verify_files(entry.path, manifest.files, keep=manifest.engine_file if keep_engine else None)
        return EngineArtifact(entry.path, manifest, engine_bytes=kept)

    # -- writing (caller holds the key lock) -------------------------------------------------

    @contextmanager
    def staging(self, key: str) -> Iterator[Path]:
        """A fresh empty folder inside the root for one build; removed on exit unless committed."""
        temp_root = self.root / TEMP_DIR
        temp_root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"build.{_checked_key(key)}.", dir=temp_root))
        try:
            yield path
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)

    def commit(self, staging: Path, manifest: Manifest) -> EngineArtifact:
        """Checksum every file in ``staging``, write the manifest, flush, and rename the folder into
        place as the entry for (manifest key, manifest weights). Replaces an entry already there."""
        files = checksum_folder(staging, sync=True)
        for name in (manifest.engine_file, manifest.calibration_file):
            if name is not None and name not in files:
                raise BuildError(
                    describe(
                        "the backend reported a file it did not write",
                        seen=name,
                        fix=f"the output folder holds {sorted(files)}",
                    )
                )
        manifest = replace(manifest, files=files, created_at=self.now())
        _write_synced(staging / MANIFEST_NAME, manifest.dumps())
        _set_mtime(staging / MANIFEST_NAME, manifest.created_at)
        _fsync_dir(staging)
        dest = self.entry_path(manifest.key, str(manifest.fingerprint["weights_hash"]))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            self._discard(dest)
        os.replace(staging, dest)
        _fsync_dir(dest.parent)
        return EngineArtifact(dest, manifest)

    def update_manifest(self, artifact: EngineArtifact, manifest: Manifest) -> EngineArtifact:
        """Rewrite an entry's manifest atomically (same files; e.g. to record an accuracy report)."""
        target = artifact.path / MANIFEST_NAME
        temp_root = self.root / TEMP_DIR
        temp_root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="trash.manifest.", dir=temp_root)
        os.close(fd)
        _write_synced(Path(name), manifest.dumps())
        os.replace(name, target)
        _set_mtime(target, self.now())
        return EngineArtifact(artifact.path, manifest)

    def touch(self, entry: CacheEntry | EngineArtifact) -> None:
        """Mark an entry used now (best effort: a read-only cache still serves hits)."""
        with contextlib.suppress(OSError):
            _set_mtime(entry.path / MANIFEST_NAME, self.now())

    def remove(self, entry: CacheEntry | EngineArtifact) -> None:
        """Delete an entry: renamed out of sight first, so no half-deleted entry is ever visible."""
        if entry.path.exists():
            self._discard(entry.path)
        with contextlib.suppress(OSError):  # other weights of the key are still there
            entry.path.parent.rmdir()

    def _discard(self, path: Path) -> None:
        temp_root = self.root / TEMP_DIR
        temp_root.mkdir(parents=True, exist_ok=True)
        trash = Path(tempfile.mkdtemp(prefix="trash.", dir=temp_root))
        os.replace(path, trash / "entry")
        shutil.rmtree(trash, ignore_errors=True)


class WallClock:
    """Seconds since the epoch (``time.time``): times that mean something to another process."""

    def now(self) -> float:
        return time.time()


def _checked_key(key: str) -> str:
    if not _is_key(key):
        raise ValueError(f"an engine key is 64 lowercase hex digits, seen {key!r}")
    return key


def _is_key(name: str) -> bool:
    return len(name) == 64 and is_hex(name)


def _is_weights_dir(path: Path) -> bool:
    return path.is_dir() and len(path.name) == WEIGHTS_DIR_LEN and is_hex(path.name)


def _write_synced(path: Path, text: str) -> None:
    with path.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _set_mtime(path: Path, when: float) -> None:
    os.utime(path, (when, when))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
