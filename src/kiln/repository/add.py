"""``kiln repo add``: check a model file and its config, then publish it as a new version.

Everything is checked before anything is written: the names, the config (the given file, else the
model's existing ``config.yaml``) with the repository's pydantic schema, the model with
:func:`kiln.model.load.load_model` (operator support of the config's backend when that backend is
installed here), and the config's profiles against the model's inputs. Then a new
``config.yaml`` is written (temporary file + rename) and the version is published atomically by
:func:`kiln.repository.publish.publish_version`, with the model's external data files. A failure
while writing leaves nothing behind: a config written by this call is removed again.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from kiln.cache.pipeline import check_profiles
from kiln.compile.registry import create_backend
from kiln.errors import ConfigError, describe
from kiln.model.load import load_model
from kiln.model.source import ModelSource
from kiln.repository.config import ModelRepoConfig, parse_model_config
from kiln.repository.convert import build_spec
from kiln.repository.layout import CONFIG_FILE, classify, is_model_name
from kiln.repository.publish import PublishedVersion, model_files, publish_version


@dataclass(frozen=True, slots=True)
class AddedVersion:
    """What ``kiln repo add`` did. ``config_written``: a new ``config.yaml`` was written;
    ``ops_checked``: operator support was checked against the config's backend (installed here)."""

    published: PublishedVersion
    config_written: bool
    ops_checked: bool


def add_version(
    repo: Path, model: str, onnx_path: Path, *, version: str | None = None, config_path: Path | None = None
) -> AddedVersion:
    """Check, then publish ``onnx_path`` as ``model``'s next version (or ``version``).

    ``ConfigError`` for bad names, an existing version, a config that does not parse, does not fit
    the model, or differs from the model's existing ``config.yaml``; ``ModelError`` for a model
    file kiln refuses. ``OSError`` while writing (nothing is left behind).
    """
    _check_names(repo, model, version)
    model_dir = repo / model
    existing = _read_text(model_dir / CONFIG_FILE) if (model_dir / CONFIG_FILE).exists() else None
    new_text = _read_text(config_path) if config_path is not None else None
    if new_text is not None and existing is not None and new_text != existing:
        raise ConfigError(
            describe(
                f"{model_dir / CONFIG_FILE} exists and differs from {config_path}",
                fix=f"edit {model_dir / CONFIG_FILE} in place, or add without --config",
            )
        )
    text = new_text if new_text is not None else existing
    where = str(config_path) if new_text is not None else str(model_dir / CONFIG_FILE)
    config = parse_model_config(text, where=where)
    source, ops_checked = _load_checked(onnx_path, config)
    check_profiles(build_spec(config), source.inputs)
    files: dict[str, Path | bytes] = {**model_files(onnx_path)}
    write_config = new_text is not None and existing is None
    if write_config:
        _write_atomically(model_dir / CONFIG_FILE, new_text or "")
    try:
        published = publish_version(repo, model, files, version=version)
    except BaseException:
        if write_config:
            with contextlib.suppress(OSError):
                (model_dir / CONFIG_FILE).unlink()
                model_dir.rmdir()  # only when this call created it (it is empty again)
        raise
    return AddedVersion(published, write_config, ops_checked)


def _check_names(repo: Path, model: str, version: str | None) -> None:
    if not repo.is_dir():
        raise ConfigError(describe("the model repository is not a folder", seen=str(repo), fix="create it"))
    if not is_model_name(model):
        raise ConfigError(
            describe(
                "not a model name",
                seen=model,
                fix="use letters, digits, '_', '-', '.' (start with a letter or digit)",
            )
        )
    if version is not None:
        if classify(version) != "version":
            raise ConfigError(
                describe("not a version number", seen=version, fix="use a positive integer: 1, 2, 3...")
            )
        if (repo / model / version).exists():
            raise ConfigError(
                describe(
                    f"version {version} of {model} already exists",
                    seen=str(repo / model / version),
                    fix="leave out --version to take the next free number",
                )
            )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            describe(f"cannot read {path}", seen=str(error), fix="give a readable YAML file")
        ) from None


def _load_checked(onnx_path: Path, config: ModelRepoConfig) -> tuple[ModelSource, bool]:
    """The model, validated; with the config's backend's operator support when it is installed."""
    try:
        backend = create_backend(config.backend)
        usable = backend.available() is None
    except (ImportError, ConfigError):
        usable = False
    if not usable:
        return load_model(onnx_path), False
    return load_model(onnx_path, op_support=backend.op_support()), True


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(text, encoding="utf-8")
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
