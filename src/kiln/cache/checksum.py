"""Checksums of an artifact folder: written once at commit, verified on every load."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from kiln.compile.backends.base import MANIFEST_NAME, FileEntry
from kiln.errors import BuildError, CacheCorrupt, describe

_CHUNK = 1 << 20


def hash_file(path: Path, *, sync: bool = False) -> FileEntry:
    """SHA-256 and size of one file; with ``sync``, also flush it to disk first."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        if sync:
            os.fsync(f.fileno())
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(sha256=digest.hexdigest(), size_bytes=size)


def checksum_folder(folder: Path, *, sync: bool = False) -> dict[str, FileEntry]:
    """Checksum of every regular file under ``folder`` (except the manifest), keyed by POSIX path.

    Raises ``BuildError`` on a symbolic link or a special file: an artifact holds plain files only,
    so that nothing it names can live outside its folder.
    """
    files: dict[str, FileEntry] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise BuildError(
                describe(
                    "an engine artifact may hold only plain files and folders",
                    seen=rel,
                    fix="have the backend write real files into its output folder",
                )
            )
        if path.is_file() and rel != MANIFEST_NAME:
            files[rel] = hash_file(path, sync=sync)
    return files


def verify_files(folder: Path, files: Mapping[str, FileEntry], *, keep: str | None = None) -> bytes | None:
    """Recompute every listed file's size and SHA-256; ``CacheCorrupt`` naming each mismatch.
    ``keep`` names a listed file whose verified content is returned (read once, for the caller
    to use); ``None`` is returned without it."""
    problems: list[str] = []
    kept: bytes | None = None
    for rel, want in sorted(files.items()):
        path = _inside(folder, rel)
        if path is None:
            problems.append(f"{rel}: path escapes the entry folder")
        elif not path.is_file() or path.is_symlink():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != want.size_bytes:
            problems.append(f"{rel}: {path.stat().st_size} bytes, manifest says {want.size_bytes}")
        elif rel == keep:
            kept = path.read_bytes()
            if hashlib.sha256(kept).hexdigest() != want.sha256:
                problems.append(f"{rel}: sha256 differs from the manifest")
        elif hash_file(path).sha256 != want.sha256:
            problems.append(f"{rel}: sha256 differs from the manifest")
    if problems:
        raise CacheCorrupt(
            describe(
                f"cache entry {folder} failed verification: " + "; ".join(problems),
                fix="the entry is removed and rebuilt (or run `kiln cache rm` on it)",
            )
        )
    return kept


def _inside(folder: Path, rel: str) -> Path | None:
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        return None
    return folder.joinpath(*parts)
