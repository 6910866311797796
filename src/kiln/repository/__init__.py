"""The model repository: ``repo/<model>/config.yaml`` + ``repo/<model>/<version>/model.onnx``,
watched for new versions that are built through the engine cache and hot-swapped into the runtime.

* :mod:`~kiln.repository.config` — ``config.yaml`` (pydantic, unknown keys rejected by name);
  :mod:`~kiln.repository.convert` — to ``BuildSpec`` and the runtime's ``ModelConfig``;
* :mod:`~kiln.repository.layout`, :mod:`~kiln.repository.scan`, :mod:`~kiln.repository.diff` —
  names, what is on disk and which versions are complete, what changed;
* :mod:`~kiln.repository.reconcile` — what to build, load and unload (pure decisions);
* :mod:`~kiln.repository.build` — builds in a niced worker process;
* :mod:`~kiln.repository.manager` — the driver, the server's ``ModelControl``
  (:mod:`~kiln.repository.options`: how it watches and builds; :mod:`~kiln.repository.hooks`:
  a check before each build and callbacks when a version serves or fails);
* :mod:`~kiln.repository.publish` — writing a new version atomically.

See ``docs/repository.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.errors import ConfigError, describe
from kiln.repository.build import Builder, BuildJob, BuildOutcome, ProcessBuilder, ThreadBuilder
from kiln.repository.config import DEFAULT_CONFIG, ModelRepoConfig, parse_model_config
from kiln.repository.control import IndexEntry, ModelControl, RepositoryService
from kiln.repository.convert import build_spec, fallback_spec, runtime_config
from kiln.repository.diff import ChangeKind, RepoChange, diff
from kiln.repository.hooks import NoHooks, ServingVersion, VersionHooks, VersionVerdict
from kiln.repository.manager import RepositoryManager
from kiln.repository.options import RepositoryOptions
from kiln.repository.scan import RepoScan, read_repository, scan_repository, settle
from kiln.runtime import Runtime


def create_repository(path: Path, runtime: Runtime, **settings: Any) -> RepositoryManager:
    """The repository at ``path`` driving ``runtime`` (not started: ``await repo.start()``).

    ``settings`` are :class:`RepositoryOptions` fields (``poll_interval_s=0.5``...) or the
    manager's keyword arguments (``options``, ``builder``, ``metrics``, ``efficiency``, ``loader``,
    ``clock``, ``hooks``: a :class:`VersionHooks`). ``ConfigError`` for an out-of-range option or
    a ``path`` that is not a folder.
    """
    if not Path(path).is_dir():
        raise ConfigError(
            describe("the model repository is not a folder", seen=str(path), fix="give a folder")
        )
    keywords = {"options", "builder", "metrics", "efficiency", "loader", "clock", "hooks"}
    manager_args = {k: v for k, v in settings.items() if k in keywords}
    option_args = {k: v for k, v in settings.items() if k not in keywords}
    if option_args:
        if "options" in manager_args:
            raise ConfigError(describe("give options or option fields, not both", seen=sorted(option_args)))
        try:
            manager_args["options"] = RepositoryOptions(**option_args)
        except TypeError as exc:
            raise ConfigError(describe("unknown repository option", seen=str(exc))) from None
    return RepositoryManager(Path(path), runtime, **manager_args)


__all__ = [
    "DEFAULT_CONFIG",
    "BuildJob",
    "BuildOutcome",
    "Builder",
    "ChangeKind",
    "IndexEntry",
    "ModelControl",
    "ModelRepoConfig",
    "NoHooks",
    "ProcessBuilder",
    "RepoChange",
    "RepoScan",
    "RepositoryManager",
    "RepositoryOptions",
    "RepositoryService",
    "ServingVersion",
    "ThreadBuilder",
    "VersionHooks",
    "VersionVerdict",
    "build_spec",
    "create_repository",
    "diff",
    "fallback_spec",
    "parse_model_config",
    "read_repository",
    "runtime_config",
    "scan_repository",
    "settle",
]
