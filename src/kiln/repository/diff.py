"""What changed between two scans of the repository: a pure function, one ``RepoChange`` per event.

Only complete versions count: a version being written is not "added" until :func:`kiln.repository.scan.settle`
accepts it, and a version whose files change is "changed" only once the new files are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kiln.repository.layout import version_order
from kiln.repository.scan import ModelScan, RepoScan


class ChangeKind(StrEnum):
    MODEL_ADDED = "model-added"
    MODEL_REMOVED = "model-removed"
    CONFIG_CHANGED = "config-changed"
    VERSION_ADDED = "version-added"
    VERSION_CHANGED = "version-changed"
    VERSION_REMOVED = "version-removed"


@dataclass(frozen=True, slots=True)
class RepoChange:
    """One change: its kind, the model, the version (for version changes) and a detail."""

    kind: ChangeKind
    model: str
    version: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = self.model if self.version is None else f"{self.model}/{self.version}"
        return f"{self.kind} {where}" + (f" ({self.detail})" if self.detail else "")


_EMPTY = ModelScan("", None, False, {})


def diff(previous: RepoScan | None, current: RepoScan) -> list[RepoChange]:
    """The changes from ``previous`` (``None``: an empty repository) to ``current``, models in name
    order; per model the model event, then its config, then versions in numeric order."""
    before = previous.models if previous is not None else {}
    changes: list[RepoChange] = []
    for name in sorted(set(before) | set(current.models)):
        old, new = before.get(name), current.models.get(name)
        if old is None and new is not None:
            changes.append(RepoChange(ChangeKind.MODEL_ADDED, name))
        elif old is not None and new is None:
            changes.append(RepoChange(ChangeKind.MODEL_REMOVED, name))
        elif old is not None and new is not None and old.config_text != new.config_text:
            detail = (
                "added" if old.config_text is None else "removed" if new.config_text is None else "edited"
            )
            changes.append(RepoChange(ChangeKind.CONFIG_CHANGED, name, detail=detail))
        changes += _version_changes(name, old or _EMPTY, new or _EMPTY)
    return changes


def _version_changes(name: str, old: ModelScan, new: ModelScan) -> list[RepoChange]:
    was = {v: s.accepted_stamp for v, s in old.versions.items() if s.accepted_stamp is not None}
    now = {v: s.accepted_stamp for v, s in new.versions.items() if s.accepted_stamp is not None}
    changes: list[RepoChange] = []
    for version in sorted(set(was) | set(now), key=version_order):
        if version not in was:
            changes.append(RepoChange(ChangeKind.VERSION_ADDED, name, version))
        elif version not in now:
            gone = version not in new.versions
            detail = "folder removed" if gone else new.versions[version].reason or "no longer complete"
            changes.append(RepoChange(ChangeKind.VERSION_REMOVED, name, version, detail))
        elif was[version] != now[version]:
            changes.append(RepoChange(ChangeKind.VERSION_CHANGED, name, version, "files changed"))
    return changes
