"""What the repository knows about each model version, and the index it shows (pure data).

A version's ``phase`` is where its latest attempt stands; ``serving`` is whether the runtime has
it READY now. They are separate because a version can serve while a new engine of it is built
(a config change, an explicit reload), and keeps serving when that new engine fails.

```
INCOMPLETE ─► IDLE ─► QUEUED ─► BUILDING ─► LOADING ─► LOADED ─► UNLOADING ─► IDLE
                        ▲  │         │           │
                        │  └─► IDLE  └─► FAILED ◄┘      (retried when its files or config change,
                        └───────────────────┘            or on an explicit load)
```
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from kiln.repository.config import ModelRepoConfig
from kiln.repository.control import IndexEntry, IndexState
from kiln.repository.layout import version_order


class Phase(StrEnum):
    INCOMPLETE = "incomplete"
    IDLE = "idle"
    QUEUED = "queued"
    BUILDING = "building"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"
    UNLOADING = "unloading"


IN_PROGRESS = frozenset({Phase.QUEUED, Phase.BUILDING, Phase.LOADING})

_STATE: dict[Phase, IndexState] = {
    Phase.INCOMPLETE: "UNAVAILABLE",
    Phase.IDLE: "UNAVAILABLE",
    Phase.QUEUED: "LOADING",
    Phase.BUILDING: "LOADING",
    Phase.LOADING: "LOADING",
    Phase.LOADED: "UNAVAILABLE",
    Phase.FAILED: "FAILED",
    Phase.UNLOADING: "UNLOADING",
}


@dataclass
class VersionRecord:
    """One version of one model. ``target`` is the signature (files + build config) the current
    phase is about; ``served`` the signature of the engine serving now."""

    version: str
    phase: Phase
    reason: str
    since_s: float
    target: str | None = None
    serving: bool = False
    served: str | None = None
    in_repo: bool = True

    def move(self, phase: Phase, reason: str, now_s: float, *, target: str | None = None) -> None:
        self.phase, self.reason, self.since_s = phase, reason, now_s
        if target is not None:
            self.target = target

    def entry(self, model: str) -> IndexEntry:
        if self.serving and self.phase is not Phase.UNLOADING:
            return IndexEntry(model, self.version, "READY", self._serving_reason())
        return IndexEntry(model, self.version, _STATE[self.phase], self.reason)

    def _serving_reason(self) -> str:
        if self.phase in IN_PROGRESS:
            return f"serving; a new engine is {self.phase}: {self.reason}"
        if self.phase is Phase.FAILED:
            return f"serving the engine it had; the new one failed: {self.reason}"
        return self.reason


@dataclass
class ModelRecord:
    """One model folder: its parsed config (or why it is invalid) and its versions."""

    name: str
    config: ModelRepoConfig | None = None
    config_error: str | None = None
    config_text: str | None = None
    versions: dict[str, VersionRecord] = field(default_factory=dict)
    unloaded: bool = False
    in_repo: bool = True
    reload: bool = False
    notice: str = ""

    def ordered(self) -> list[VersionRecord]:
        return sorted(self.versions.values(), key=lambda r: version_order(r.version))

    def serving(self) -> list[str]:
        return [r.version for r in self.ordered() if r.serving]

    def entries(self) -> list[IndexEntry]:
        entries = [record.entry(self.name) for record in self.ordered()]
        if self.notice:
            entries = [
                IndexEntry(
                    e.name, e.version, e.state, f"{e.reason}; {self.notice}" if e.reason else self.notice
                )
                if e.state == "READY"
                else e
                for e in entries
            ]
        return entries


def index_entries(models: Iterable[ModelRecord], *, ready_only: bool = False) -> list[IndexEntry]:
    """The repository index: every version of every model, in name and version order."""
    entries = [e for model in sorted(models, key=lambda m: m.name) for e in model.entries()]
    return [e for e in entries if e.state == "READY"] if ready_only else entries
