"""How the model repository is watched and built (:class:`RepositoryOptions`), and the seams
it reports through: where build and load times go, how a built artifact becomes an engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kiln.compile.backends.base import Engine, EngineArtifact
from kiln.errors import ConfigError, describe
from kiln.repository.build import BuildIn

EngineLoader = Callable[[EngineArtifact], Engine]
"""Loads a built artifact into an engine (called on the runtime's control thread)."""


class BuildEvents(Protocol):
    """Where build and load times go (``ServerMetrics.builds`` fits)."""

    def observe_build(self, model: str, path: str, seconds: float) -> None: ...
    def observe_load(self, model: str, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class RepositoryOptions:
    """How the repository is watched and built.

    Fields:
        poll_interval_s: seconds between scans; 0 = no polling (loads only at start and on
            explicit ``load`` calls).
        settle_s: how long a version folder must stay unchanged before it counts as complete
            (rename mode; see ``kiln.repository.scan``).
        cache_dir: the engine cache (``None``: ``$KILN_CACHE_DIR``, else ``~/.cache/kiln/engines``).
        build_in: ``process`` (spawned worker at a lower CPU priority) or ``thread``.
        build_workers: builds at the same time (one per model at most).
        build_nice: how much lower the build process's CPU priority is (``os.nice``).
        lock_timeout_s: longest wait for another builder of the same engine (``None``: no limit).
        intra_op_threads: threads per engine run when loading (0: the backend decides).
    """

    poll_interval_s: float = 1.0
    settle_s: float = 1.0
    cache_dir: Path | None = None
    build_in: BuildIn = "process"
    build_workers: int = 1
    build_nice: int = 10
    lock_timeout_s: float | None = None
    intra_op_threads: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("poll_interval_s", self.poll_interval_s, 0.0, 3600.0),
            ("settle_s", self.settle_s, 0.0, 3600.0),
            ("build_workers", self.build_workers, 1, 64),
            ("build_nice", self.build_nice, 0, 19),
            ("intra_op_threads", self.intra_op_threads, 0, 1024),
        )
        for name, value, low, high in checks:
            if not low <= value <= high:
                raise ConfigError(describe(f"{name} is out of range", seen=value, fix=f"use {low}..{high}"))
