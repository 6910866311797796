"""Hooks into a version's way from the repository folder to serving traffic.

The repository calls a :class:`VersionHooks` at three points of each version it builds:

```
new version ──► before_build ──► build through the cache ──► load, warm up ──► on_serving
                    │ rejected                  │ failed            │ failed
                    └──────────────► on_failed ◄┴───────────────────┘
```

A rejection in ``before_build`` marks the version FAILED with the hook's reason (the index shows
it), nothing of it is built or loaded, and the version serving keeps serving. The online-learning
loop (:mod:`kiln.online.loop`) plugs its accuracy gate, journal and metrics in here; the repository
itself knows nothing about feedback or training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class VersionVerdict:
    """``before_build``'s answer: build the version or not, and why (shown in the index)."""

    accept: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ServingVersion:
    """A version that went live: how its engine came from the cache and how long each step took.

    Fields:
        path: the cache's build path of the primary engine (``hit``, ``build``, ``refit``,
            ``calibration-reuse``, ``recalibrate``).
        build_seconds: the cache's time to produce that engine.
        ready_seconds: from the start of its build (after ``before_build``) to serving.
        check_seconds: the time ``before_build`` took.
    """

    model: str
    version: str
    folder: Path
    path: str
    build_seconds: float
    ready_seconds: float
    check_seconds: float


class VersionHooks(Protocol):
    """What the repository tells (and asks) an observer of new versions. Every method is called
    off the event loop (a worker thread) and must not raise; slow work in ``before_build`` delays
    only that version."""

    def before_build(self, model: str, version: str, folder: Path) -> VersionVerdict:
        """May ``folder`` (``model``/``version``, complete) be built and served?"""

    def on_serving(self, event: ServingVersion) -> None:
        """``event.version`` is READY and takes new requests."""

    def on_failed(self, model: str, version: str, reason: str) -> None:
        """The version will not serve: rejected by ``before_build``, or its build or load failed."""

    def on_superseded(self, model: str, version: str, reason: str) -> None:
        """The version was going to serve (queued for a build, or building) and will not: a newer
        version was chosen instead, or the policy no longer selects it (``reason`` says which)."""


class NoHooks:
    """Accepts every version and records nothing (the repository's default)."""

    def before_build(self, model: str, version: str, folder: Path) -> VersionVerdict:
        return VersionVerdict(True)

    def on_serving(self, event: ServingVersion) -> None:
        return None

    def on_failed(self, model: str, version: str, reason: str) -> None:
        return None

    def on_superseded(self, model: str, version: str, reason: str) -> None:
        return None
