"""Scanning the repository: what is on disk (I/O), and which versions are complete (pure).

:func:`read_repository` lists the model folders, their ``config.yaml`` text and their version
folders with every file's size and modification time. :func:`settle` then decides, from that and
the previous scan, which versions are *complete*. The rule (``docs/repository.md``):

* names starting with ``.`` or ending ``.tmp``/``.partial``/... are a writer's temporary folders:
  never looked at. Other non-numeric folders (``calibration``) are not versions;
* a version needs ``model.onnx``;
* **marker mode** (``completeness: marker``, or ``auto`` when any version folder of the model
  holds a ``READY`` file): a version is complete once its ``READY`` file exists;
* **rename mode** (otherwise): a version is complete once it has been seen unchanged (same files,
  sizes and modification times) for ``settle_s``, provided it had ``model.onnx`` when first seen and
  never changed before being accepted. A folder seen changing under its final name is being copied
  in place: it then needs a ``READY`` file;
* an accepted version stays accepted with the content it was accepted with while new files settle
  (also in marker mode): rewriting a version in place is picked up only once it is stable again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Set
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from kiln.errors import ConfigError
from kiln.repository.config import Completeness, parse_model_config
from kiln.repository.layout import (
    CONFIG_FILE,
    MARKER_FILE,
    MODEL_FILE,
    classify,
    is_model_name,
    is_temporary,
    version_order,
)

FileStamp = tuple[str, int, int]
"""(path inside the version folder, size in bytes, modification time in ns)."""


@dataclass(frozen=True, slots=True)
class VersionFolder:
    """One version folder as read from disk. ``files`` leaves out the ``READY`` marker itself."""

    version: str
    files: tuple[FileStamp, ...]
    has_model: bool
    has_marker: bool

    @property
    def stamp(self) -> str:
        """A hash of every file's path, size and modification time."""
        return hashlib.sha256(repr(self.files).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ModelFolder:
    """One model folder as read from disk."""

    name: str
    config_text: str | None
    versions: tuple[VersionFolder, ...] = ()
    ignored: tuple[tuple[str, str], ...] = ()
    config_error: str | None = None


@dataclass(frozen=True, slots=True)
class RepoFolder:
    """The repository as read from disk: model folders, and folders that are not models (why)."""

    models: tuple[ModelFolder, ...]
    ignored: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class VersionScan:
    """One version after :func:`settle`: complete or not, and why."""

    folder: VersionFolder
    first_seen_s: float
    stamp_since_s: float
    seen_changing: bool
    accepted_stamp: str | None
    reason: str = ""

    @property
    def version(self) -> str:
        return self.folder.version

    @property
    def complete(self) -> bool:
        """Offered for serving (with the content of ``accepted_stamp``)."""
        return self.accepted_stamp is not None


@dataclass(frozen=True, slots=True)
class ModelScan:
    name: str
    config_text: str | None
    marker_mode: bool
    versions: Mapping[str, VersionScan]
    ignored: tuple[tuple[str, str], ...] = ()
    config_error: str | None = None

    def complete_versions(self) -> list[str]:
        """Complete versions, oldest first."""
        return sorted((v for v, s in self.versions.items() if s.complete), key=version_order)


@dataclass(frozen=True, slots=True)
class RepoScan:
    """The repository at ``time_s`` with every version's completeness decided."""

    time_s: float
    models: Mapping[str, ModelScan]
    ignored: tuple[tuple[str, str], ...] = ()


# -- reading (I/O) -------------------------------------------------------------------------------


def read_repository(root: Path) -> RepoFolder:
    """List ``root``'s model folders with their config text and version folders. Never raises for
    what writers do meanwhile (a file or folder vanishing mid-scan is left out until the next scan)."""
    models: list[ModelFolder] = []
    ignored: list[tuple[str, str]] = []
    for entry in _folders(root):
        if is_temporary(entry.name):
            continue
        if not is_model_name(entry.name):
            ignored.append((entry.name, "not a model name (letters, digits, '_', '-', '.')"))
            continue
        models.append(read_model_folder(Path(entry.path)))
    return RepoFolder(tuple(models), tuple(ignored))


def read_model_folder(folder: Path) -> ModelFolder:
    config_text, config_error = _read_config(folder / CONFIG_FILE)
    versions: list[VersionFolder] = []
    ignored: list[tuple[str, str]] = []
    for entry in _folders(folder):
        kind = classify(entry.name)
        if kind == "version":
            version = _read_version(Path(entry.path))
            if version is not None:
                versions.append(version)
        elif kind == "other":
            ignored.append((entry.name, "not a version (version folders are positive integers)"))
    versions.sort(key=lambda v: version_order(v.version))
    return ModelFolder(folder.name, config_text, tuple(versions), tuple(ignored), config_error)


def _folders(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return sorted((e for e in entries if _is_dir(e)), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _read_config(path: Path) -> tuple[str | None, str | None]:
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path} cannot be read: {exc}"


def _read_version(folder: Path) -> VersionFolder | None:
    files: list[FileStamp] = []
    has_marker = False
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            relative = path.relative_to(folder).as_posix()
            if relative == MARKER_FILE:
                has_marker = True
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            files.append((relative, stat.st_size, stat.st_mtime_ns))
    if not folder.is_dir():
        return None
    has_model = any(f[0] == MODEL_FILE for f in files)
    return VersionFolder(folder.name, tuple(files), has_model, has_marker)


def scan_repository(
    root: Path, previous: RepoScan | None, *, now_s: float, settle_s: float, trusted: Set[str] = frozenset()
) -> RepoScan:
    """Read ``root`` and :func:`settle` it against ``previous``."""
    return settle(previous, read_repository(root), now_s=now_s, settle_s=settle_s, trusted=trusted)


# -- deciding (pure) -----------------------------------------------------------------------------


def settle(
    previous: RepoScan | None,
    current: RepoFolder,
    *,
    now_s: float,
    settle_s: float,
    trusted: Set[str] = frozenset(),
) -> RepoScan:
    """Decide which versions of ``current`` are complete, given the previous scan (``None`` at
    start). Models in ``trusted`` (named in an explicit load) skip the settle time in rename mode."""
    models: dict[str, ModelScan] = {}
    for folder in current.models:
        before = previous.models.get(folder.name) if previous is not None else None
        models[folder.name] = _settle_model(before, folder, now_s, settle_s, folder.name in trusted)
    return RepoScan(now_s, MappingProxyType(models), current.ignored)


def _settle_model(
    before: ModelScan | None, folder: ModelFolder, now_s: float, settle_s: float, trusted: bool
) -> ModelScan:
    mode = completeness_of(folder.config_text)
    marker_mode = mode == "marker" or (mode == "auto" and any(v.has_marker for v in folder.versions))
    versions: dict[str, VersionScan] = {}
    for version in folder.versions:
        prev = before.versions.get(version.version) if before is not None else None
        rule = _Rule(marker_mode, now_s, settle_s, trusted)
        versions[version.version] = settle_version(prev, version, rule)
    return ModelScan(
        folder.name,
        folder.config_text,
        marker_mode,
        MappingProxyType(versions),
        folder.ignored,
        folder.config_error,
    )


@dataclass(frozen=True, slots=True)
class _Rule:
    marker_mode: bool
    now_s: float
    settle_s: float
    trusted: bool


def settle_version(prev: VersionScan | None, folder: VersionFolder, rule: _Rule) -> VersionScan:
    """One version's completeness (see the module docstring)."""
    same = prev is not None and prev.folder.stamp == folder.stamp
    accepted = prev.accepted_stamp if prev is not None else None
    scan = VersionScan(
        folder=folder,
        first_seen_s=prev.first_seen_s if prev is not None else rule.now_s,
        stamp_since_s=prev.stamp_since_s if prev is not None and same else rule.now_s,
        seen_changing=(prev is not None and prev.seen_changing)
        or (accepted is None and (not folder.has_model or (prev is not None and not same))),
        accepted_stamp=None,
    )
    if accepted is not None and accepted == folder.stamp:
        return replace(scan, accepted_stamp=accepted)
    if not folder.has_model:
        return replace(scan, reason=f"incomplete: no {MODEL_FILE} yet")
    if accepted is not None:  # accepted before, its files changed: wait until they are stable again
        return _settled(scan, rule, keep=accepted)
    if rule.marker_mode or scan.seen_changing:
        if folder.has_marker:
            return replace(scan, accepted_stamp=folder.stamp)
        why = (
            f"this model's versions are marked complete by a {MARKER_FILE} file"
            if rule.marker_mode
            else "it changed while being watched (copied in place?)"
        )
        return replace(scan, reason=f"incomplete: waiting for its {MARKER_FILE} file; {why}")
    if folder.has_marker or rule.trusted:
        return replace(scan, accepted_stamp=folder.stamp)
    return _settled(scan, rule, keep=None)


def _settled(scan: VersionScan, rule: _Rule, *, keep: str | None) -> VersionScan:
    """Accepted when unchanged for ``settle_s`` (and seen at least twice), else keeps ``keep``."""
    stable_s = rule.now_s - scan.stamp_since_s
    if rule.trusted or (stable_s >= rule.settle_s and scan.stamp_since_s < rule.now_s):
        return replace(scan, accepted_stamp=scan.folder.stamp)
    reason = f"settling: unchanged for {stable_s:.1f} s of {rule.settle_s:g} s"
    if keep is not None:
        reason = f"its files changed; the new content is used once it is stable ({reason})"
    return replace(scan, accepted_stamp=keep, reason=reason)


@lru_cache(maxsize=256)
def completeness_of(config_text: str | None) -> Completeness:
    """The ``completeness`` a config asks for; ``auto`` when it cannot be parsed (the config error
    itself is reported where the config is used)."""
    try:
        return parse_model_config(config_text, where=CONFIG_FILE).completeness
    except ConfigError:
        return "auto"
