"""Publishing a new version into a model repository, atomically.

A writer (``kiln gate --publish``, ``kiln train``, a CI job) never lets a server see half a
version: the files go into a hidden temporary folder next to the versions, are flushed to disk,
get their ``READY`` marker, and only then is the folder renamed to its version number. A rename
within one file system is atomic, so a watcher sees either nothing or the whole version.

```
repo/ctr/.7.3f9a2c1d.tmp/   while writing (ignored by the scan: hidden, ends with .tmp)
repo/ctr/7/                 after the rename: model.onnx, READY, kiln-version.json
```
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import ConfigError, describe
from kiln.repository.layout import MARKER_FILE, MODEL_FILE, classify, is_model_name, version_order

METADATA_FILE = "kiln-version.json"
"""Written into every published version: its tag and when it was published."""

_ATTEMPTS = 16


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    """Where a version went."""

    model: str
    version: str
    path: Path
    tag: str


def existing_versions(model_dir: Path) -> list[str]:
    """The version folders of ``model_dir`` (complete or not), oldest first."""
    if not model_dir.is_dir():
        return []
    names = [p.name for p in model_dir.iterdir() if p.is_dir() and classify(p.name) == "version"]
    return sorted(names, key=version_order)


def next_version(model_dir: Path) -> str:
    """One more than the newest version folder (``"1"`` for a model with none)."""
    versions = existing_versions(model_dir)
    return str(version_order(versions[-1]) + 1) if versions else "1"


def model_files(onnx_path: Path) -> dict[str, Path]:
    """The files of the model at ``onnx_path`` by their name in a version folder, for
    :func:`publish_version`: the model as ``model.onnx`` and every external data file it names by
    its path relative to the model's folder (the locations stay valid after the copy).

    Check the model first (``kiln.model.load.load_model``); this raises ``ModelError`` only for
    external data kiln refuses (outside the model's folder, missing; see ``kiln.model.external``).
    """
    import onnx  # noqa: PLC0415 (onnx loads only when a model file is published)

    from kiln.errors import ModelError  # noqa: PLC0415
    from kiln.model.external import plan_external_data  # noqa: PLC0415

    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    plan = plan_external_data(model, onnx_path.parent)
    if plan.problems:
        raise ModelError(list(plan.problems), path=str(onnx_path))
    root = onnx_path.parent.resolve()
    return {MODEL_FILE: onnx_path, **{f.relative_to(root).as_posix(): f for f in plan.files}}


def publish_version(
    repo: Path,
    model: str,
    files: Mapping[str, Path | bytes],
    *,
    version: str | None = None,
    tag: str = "",
) -> PublishedVersion:
    """Write ``files`` (name inside the version folder → source path or bytes) as a new version.

    ``files`` must hold ``model.onnx``. Without ``version`` the next free number is taken (retrying
    when another writer takes it first); an explicit ``version`` that exists is refused. Raises
    ``ConfigError`` for a bad name; leaves no temporary folder behind on any failure.
    """
    _check(repo, model, files, version)
    model_dir = Path(repo) / model
    model_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(_ATTEMPTS):
        number = version or next_version(model_dir)
        staging = _stage(model_dir, number, files, tag)
        try:
            os.rename(staging, model_dir / number)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if version is not None or not (model_dir / number).exists():
                raise
            continue
        _fsync_dir(model_dir)
        return PublishedVersion(model=model, version=number, path=model_dir / number, tag=tag)
    raise ConfigError(describe("could not find a free version number", seen=str(model_dir)))


def _check(repo: Path, model: str, files: Mapping[str, Path | bytes], version: str | None) -> None:
    if not Path(repo).is_dir():
        raise ConfigError(describe("the model repository is not a folder", seen=str(repo), fix="create it"))
    if not is_model_name(model):
        raise ConfigError(describe("not a model name", seen=model, fix="use letters, digits, '_', '-', '.'"))
    if MODEL_FILE not in files:
        raise ConfigError(describe(f"a version needs {MODEL_FILE}", seen=sorted(files)))
    for name in files:
        if name in (MARKER_FILE, METADATA_FILE) or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ConfigError(describe("file name not allowed in a version", seen=name))
    if version is not None:
        if classify(version) != "version":
            raise ConfigError(describe("not a version number", seen=version, fix="use 1, 2, 3..."))
        if (Path(repo) / model / version).exists():
            raise ConfigError(
                describe("that version already exists", seen=version, fix="publish a new number")
            )


def _stage(model_dir: Path, number: str, files: Mapping[str, Path | bytes], tag: str) -> Path:
    staging = model_dir / f".{number}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()
    try:
        for name, source in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                target.write_bytes(source)
            else:
                shutil.copyfile(source, target)
            _fsync_file(target)
        metadata = {"tag": tag, "published_at": time.time()}
        (staging / METADATA_FILE).write_text(json.dumps(metadata))
        (staging / MARKER_FILE).write_text("")
        _fsync_file(staging / METADATA_FILE)
        _fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
