"""The versions of one model: which one is active, which are resident, where requests are pinned.

One lock (a ``Condition``, so drains can wait for pins to drop) guards it all, and is held only for
pointer updates: never across engine work. Admission takes it for a moment to read the active
version and pin the request to it; a swap takes it to replace the active version; so a request
either sees the old version and is counted there, or sees the new one.
"""

from __future__ import annotations

import threading

from kiln.errors import ModelNotFound, NotReady, describe
from kiln.runtime.config import VersionPolicy
from kiln.runtime.engine import LoadedVersion
from kiln.runtime.lifecycle import VersionLifecycle, VersionState, VersionStatus

MAX_RECORDS = 32


class VersionTable:
    """Bookkeeping of one model's versions; thread-safe, no I/O."""

    def __init__(self, model: str, policy: VersionPolicy) -> None:
        self.model = model
        self.policy = policy
        self._cond = threading.Condition()
        self.active: LoadedVersion | None = None
        self._resident: dict[int, LoadedVersion] = {}
        self._records: dict[int, VersionLifecycle] = {}
        self._history: list[str] = []
        self._seq = 0

    def add_record(self, load_id: int, lifecycle: VersionLifecycle) -> None:
        with self._cond:
            self._records[load_id] = lifecycle
            old = [i for i in self._records if i not in self._resident]
            for load in old[: max(0, len(old) - MAX_RECORDS)]:
                del self._records[load]

    def pin(self, version: str | None) -> LoadedVersion:
        """The version a new request runs on (the active one, or the READY ``version``), pinned."""
        with self._cond:
            target = self.active if version is None else self._find_ready(version)
            if target is None:
                raise self._not_servable(version)
            target.inflight += 1
            return target

    def unpin(self, target: LoadedVersion) -> None:
        with self._cond:
            target.inflight -= 1
            if target.inflight == 0:
                self._cond.notify_all()

    def find_ready(self, version: str) -> LoadedVersion | None:
        with self._cond:
            return self._find_ready(version)

    def _find_ready(self, version: str) -> LoadedVersion | None:
        found = [
            v
            for v in self._resident.values()
            if v.version == version and v.lifecycle.state is VersionState.READY
        ]
        return max(found, key=lambda v: v.load_id) if found else None

    def _not_servable(self, version: str | None) -> Exception:
        if version is None:
            return NotReady(
                describe(
                    f"model {self.model!r} has no active version", fix="load a version and wait until READY"
                )
            )
        states = [r.state for r in self._records.values() if r.version == version]
        if VersionState.LOADING in states or VersionState.WARMING in states:
            return NotReady(describe(f"version {version!r} of {self.model!r} is still loading", fix="retry"))
        ready = sorted(
            {v.version for v in self._resident.values() if v.lifecycle.state is VersionState.READY}
        )
        return ModelNotFound(
            describe(f"model {self.model!r} has no ready version {version!r}", fix=f"ready versions: {ready}")
        )

    def activate(self, new: LoadedVersion, *, push: bool) -> tuple[LoadedVersion | None, list[LoadedVersion]]:
        """Make ``new`` active in one step; (the version it replaced, the versions now DRAINING)."""
        with self._cond:
            previous, self.active = self.active, new
            self._resident[new.load_id] = new
            self._seq += 1
            new.activation_seq = self._seq
            if push:
                self._history.append(new.version)
                del self._history[: max(0, len(self._history) - self.policy.rollback_depth)]
            evicted = self._evict(new)
            for version in evicted:
                version.lifecycle.move(VersionState.DRAINING, "replaced")
            return previous, evicted

    def _evict(self, new: LoadedVersion) -> list[LoadedVersion]:
        others = [
            v for v in self._resident.values() if v is not new and v.lifecycle.state is VersionState.READY
        ]
        # Most recently active first; an older load of the same version name goes first of all.
        others.sort(key=lambda v: (v.version != new.version, v.activation_seq), reverse=True)
        return others[self.policy.max_loaded_versions - 1 :]

    def rollback_target(self) -> str:
        with self._cond:
            if len(self._history) < 2:
                raise ModelNotFound(
                    describe(
                        f"model {self.model!r} has no earlier version to roll back to",
                        seen=list(self._history),
                        fix="load the version you want instead",
                    )
                )
            return self._history[-2]

    def history(self) -> list[str]:
        """Versions made active, oldest first (at most ``rollback_depth``)."""
        with self._cond:
            return list(self._history)

    def pop_history(self, expected_previous: str) -> bool:
        """Forget the current version for a rollback, if the history still ends as expected."""
        with self._cond:
            if len(self._history) < 2 or self._history[-2] != expected_previous:
                return False
            self._history.pop()
            return True

    def retire(self, version: str | None) -> list[LoadedVersion]:
        """Stop admitting to ``version`` (every version when ``None``); the versions now DRAINING."""
        with self._cond:
            doomed = [
                v
                for v in self._resident.values()
                if v.lifecycle.state is VersionState.READY and version in (None, v.version)
            ]
            if self.active in doomed:
                self.active = None
            for v in doomed:
                v.lifecycle.move(VersionState.DRAINING, "unloaded")
            return doomed

    def wait_unpinned(self, target: LoadedVersion, timeout_s: float) -> bool:
        """Block (control thread) until no request is pinned to ``target``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: target.inflight == 0, timeout_s)

    def remove(self, target: LoadedVersion) -> None:
        with self._cond:
            self._resident.pop(target.load_id, None)

    def resident(self) -> list[LoadedVersion]:
        with self._cond:
            return list(self._resident.values())

    def records(self) -> list[tuple[int, VersionLifecycle]]:
        with self._cond:
            return sorted(self._records.items())


def version_status(
    lifecycle: VersionLifecycle, loaded: LoadedVersion | None, active: LoadedVersion | None
) -> VersionStatus:
    """The report of one load of a version; ``loaded`` when it is still resident."""
    if loaded is None or loaded.lifecycle is not lifecycle:
        return VersionStatus(lifecycle.version, lifecycle.state, lifecycle.reason, False, lifecycle.since_s)
    router = loaded.router
    return VersionStatus(
        version=lifecycle.version,
        state=lifecycle.state,
        reason=lifecycle.reason,
        active=loaded is active,
        since_s=lifecycle.since_s,
        memory_bytes=loaded.memory_bytes(),
        route=router.route.value,
        primary_health=router.health.value,
        has_fallback=router.has_fallback,
    )
