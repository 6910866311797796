"""The repository's decisions: which versions to build, load and unload. No I/O, no threads.

:class:`Reconciler` keeps a :class:`~kiln.repository.records.ModelRecord` per model folder. The
driver (:class:`kiln.repository.manager.RepositoryManager`) feeds it scans, what the runtime serves,
and the outcome of each build, load and unload; after each it calls :meth:`Reconciler.plan` and
does what the returned actions say. Every decision is here, so it is tested with a fake clock.

* **Served versions** (:func:`select_versions`): the newest ``latest`` complete versions (or the
  ``specific`` ones), leaving out versions whose last build or load failed with the same files and
  config (they are retried when either changes, or on an explicit load).
* **Builds** run at most ``max_builds`` at a time and one per model, oldest served version first
  (so the newest ends up active). A queued build of a version that is no longer served (a newer
  one arrived) is dropped before it starts: arrivals during a build coalesce into one build of the
  newest. A finished build is loaded when the version is still served, or when it is newer than
  every version serving (so a steady stream of versions still makes progress).
* **Unloads**: a version removed from the repository is unloaded only once no served version is
  still on its way and one of them serves (never before its replacement is READY), or when the
  model has nothing left to serve (folder removed, no versions, unloaded on request).
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass

from kiln._clock import Clock
from kiln.errors import ConfigError
from kiln.repository.config import ModelRepoConfig, VersionPolicyConfig, parse_model_config
from kiln.repository.control import IndexEntry
from kiln.repository.convert import build_signature
from kiln.repository.layout import CONFIG_FILE, version_order
from kiln.repository.records import IN_PROGRESS, ModelRecord, Phase, VersionRecord, index_entries
from kiln.repository.scan import ModelScan, RepoScan


@dataclass(frozen=True, slots=True)
class Build:
    """Build the engine(s) of ``model``/``version`` for ``target`` (files + config signature)."""

    model: str
    version: str
    target: str


@dataclass(frozen=True, slots=True)
class Load:
    """Load the engines the build for ``target`` made into the runtime."""

    model: str
    version: str
    target: str


@dataclass(frozen=True, slots=True)
class Unload:
    model: str
    version: str


Action = Build | Load | Unload


@dataclass(frozen=True, slots=True)
class PassedOver:
    """A version that was going to serve and will not: a newer one was chosen before it was built
    (or while it was building), or the version policy no longer selects it. ``reason`` says which."""

    model: str
    version: str
    reason: str


KEEP = frozenset({*IN_PROGRESS, Phase.UNLOADING, Phase.INCOMPLETE})
"""Phases of a version that is not offered any more but still has a record here: work in flight,
or a folder that is present but incomplete (shown in the index until it is removed)."""


def select_versions(policy: VersionPolicyConfig, candidates: Sequence[str]) -> list[str]:
    """The versions to serve among ``candidates`` (complete, not failed), oldest first."""
    ordered = sorted(candidates, key=version_order)
    if policy.specific is not None:
        wanted = {str(v) for v in policy.specific}
        return [v for v in ordered if v in wanted]
    return ordered[-(policy.latest or 1) :]


class Reconciler:
    """Per-model records and the plan that moves them (see the module docstring)."""

    def __init__(self, clock: Clock, *, max_builds: int = 1) -> None:
        self.clock = clock
        self.max_builds = max_builds
        self.models: dict[str, ModelRecord] = {}
        self._scan: RepoScan | None = None
        self._passed_over: list[PassedOver] = []

    # -- observations ------------------------------------------------------------------------

    def observe_scan(self, scan: RepoScan) -> None:
        """Take in a new scan: configs, versions added, incomplete or gone."""
        self._scan = scan
        now = self.clock.now()
        for name, model_scan in scan.models.items():
            model = self.models.setdefault(name, ModelRecord(name))
            model.in_repo = True
            _update_config(model, model_scan)
            for version, version_scan in model_scan.versions.items():
                record = model.versions.get(version)
                if record is None:
                    phase = Phase.IDLE if version_scan.complete else Phase.INCOMPLETE
                    record = model.versions[version] = VersionRecord(version, phase, version_scan.reason, now)
                record.in_repo = version_scan.complete
                if record.phase is Phase.INCOMPLETE and version_scan.complete:
                    record.move(Phase.IDLE, "", now)
                elif record.phase in (Phase.INCOMPLETE, Phase.IDLE) and not version_scan.complete:
                    record.move(Phase.INCOMPLETE, version_scan.reason, now)
        for name, model in self.models.items():
            gone = scan.models.get(name)
            model.in_repo = gone is not None
            present = gone.versions if gone is not None else {}
            for version, record in list(model.versions.items()):
                if version not in present:
                    record.in_repo = False
                    if not record.serving and record.phase not in (Phase.BUILDING, Phase.LOADING):
                        del model.versions[version]

    def observe_runtime(self, model: str, ready: Set[str]) -> None:
        """Which versions of ``model`` the runtime has READY now (it may release kept versions)."""
        record = self.models.get(model)
        if record is None:
            return
        now = self.clock.now()
        for version in record.versions.values():
            serving = version.version in ready
            if version.serving and not serving and version.phase is Phase.LOADED:
                version.move(Phase.IDLE, "released by the runtime (replaced; not kept loaded)", now)
            if version.serving and not serving:
                version.served = None
            version.serving = serving

    def request_load(self, name: str) -> None:
        """Explicit load: serve the model again if unloaded, retry failed versions, rebuild and
        reload the served ones."""
        model = self.models.setdefault(name, ModelRecord(name))
        model.unloaded = False
        model.reload = True
        now = self.clock.now()
        for record in model.versions.values():
            if record.phase is Phase.FAILED:
                record.move(Phase.IDLE, "retrying on request", now)

    def request_unload(self, name: str) -> None:
        self.models.setdefault(name, ModelRecord(name)).unloaded = True

    # -- outcomes ----------------------------------------------------------------------------

    def build_done(self, model: str, version: str, target: str, *, error: str | None, summary: str) -> bool:
        """A build finished. True when its engines should be loaded now (the record is LOADING)."""
        record = self._record(model, version)
        if record is None or record.phase is not Phase.BUILDING or record.target != target:
            return False
        now = self.clock.now()
        owner = self.models[model]
        if error is not None:
            record.move(Phase.FAILED, error, now)
            return False
        served = self._served(owner)
        newest = max((version_order(v) for v in owner.serving()), default=0)
        latest = owner.config is not None and owner.config.version_policy.specific is None
        fresher = latest and record.in_repo and not owner.unloaded and version_order(version) > newest
        if version in served or fresher:
            record.move(Phase.LOADING, summary, now)
            return True
        newer = [v for v in served if version_order(v) > version_order(version)]
        why = f"superseded by version {newer[-1]} while building" if newer else "no longer served"
        record.move(Phase.IDLE, why, now)
        self._passed_over.append(PassedOver(model, version, why))
        return False

    def load_done(self, model: str, version: str, target: str, *, ok: bool, reason: str) -> None:
        record = self._record(model, version)
        if record is None or record.phase is not Phase.LOADING or record.target != target:
            return
        now = self.clock.now()
        if ok:
            record.move(Phase.LOADED, reason, now)
            record.serving, record.served = True, target
        else:
            record.move(Phase.FAILED, reason, now)

    def unload_done(self, model: str, version: str) -> None:
        owner = self.models.get(model)
        record = None if owner is None else owner.versions.get(version)
        if owner is None or record is None:
            return
        record.serving, record.served = False, None
        if record.phase is Phase.UNLOADING:
            why = "unloaded on request" if owner.unloaded else "removed from the repository"
            record.move(Phase.IDLE, why, self.clock.now())
        if not record.in_repo and record.phase not in IN_PROGRESS:
            del owner.versions[version]

    # -- the plan ----------------------------------------------------------------------------

    def plan(self) -> list[Action]:
        """The actions to take now; each moves its record so it is never given twice."""
        actions: list[Action] = []
        for model in self.models.values():
            actions += self._plan_model(model)
        return actions + self._start_builds()

    def _plan_model(self, model: ModelRecord) -> list[Action]:
        now = self.clock.now()
        served = self._served(model)
        for version in served if model.config is not None else ():
            record = model.versions[version]
            target = self._target(model, version)
            done = record.serving and record.served == target and not model.reload
            if record.phase is Phase.QUEUED:
                record.target = target
            elif not done and record.phase not in IN_PROGRESS:
                record.move(Phase.QUEUED, "waiting for a build slot", now, target=target)
        model.reload = False
        for record in list(model.versions.values()):
            if not record.in_repo and not record.serving and record.phase not in KEEP:
                del model.versions[record.version]  # gone from the folder, nothing of it left here
                continue
            if record.version in served:
                continue
            if record.phase is Phase.QUEUED:  # a newer version arrived before this one was built
                record.move(Phase.IDLE, _idle_reason(model, record.version, served), now)
                self._passed_over.append(PassedOver(model.name, record.version, record.reason))
            if not record.in_repo or record.serving:
                continue
            error = model.config_error or "invalid config"
            if model.config is None and record.phase in (Phase.IDLE, Phase.FAILED) and record.reason != error:
                record.move(Phase.FAILED, error, now, target="")
            elif record.phase is Phase.IDLE:
                record.reason = _idle_reason(model, record.version, served)
        return self._unloads(model, served)

    def _unloads(self, model: ModelRecord, served: list[str]) -> list[Action]:
        records = model.versions
        pending = any(records[v].phase in IN_PROGRESS for v in served)
        nothing_left = model.unloaded or not model.in_repo or not any(r.in_repo for r in records.values())
        replaced = any(records[v].serving for v in served)
        if pending or not (replaced or nothing_left):
            return []
        actions: list[Action] = []
        now = self.clock.now()
        for record in model.ordered():
            gone = not record.in_repo or model.unloaded or not model.in_repo
            if record.serving and gone and record.phase is not Phase.UNLOADING:
                record.move(Phase.UNLOADING, "unloading", now)
                actions.append(Unload(model.name, record.version))
        return actions

    def _start_builds(self) -> list[Action]:
        building = sum(r.phase is Phase.BUILDING for m in self.models.values() for r in m.versions.values())
        queued = [
            (r.since_s, version_order(r.version), m.name, r)
            for m in self.models.values()
            if not any(r.phase is Phase.BUILDING for r in m.versions.values())
            for r in m.versions.values()
            if r.phase is Phase.QUEUED
        ]
        actions: list[Action] = []
        started: set[str] = set()
        now = self.clock.now()
        for _, _, name, record in sorted(queued, key=lambda q: q[:3]):
            if building >= self.max_builds:
                break
            if name in started or record.target is None:
                continue
            record.move(Phase.BUILDING, "building the engine", now)
            actions.append(Build(name, record.version, record.target))
            started.add(name)
            building += 1
        return actions

    # -- helpers -----------------------------------------------------------------------------

    def _served(self, model: ModelRecord) -> list[str]:
        if model.config is None:  # invalid config: keep what serves, start nothing new
            return model.serving()
        if model.unloaded or not model.in_repo:
            return []
        candidates = [
            r.version
            for r in model.versions.values()
            if r.in_repo and not (r.phase is Phase.FAILED and r.target == self._target(model, r.version))
        ]
        return select_versions(model.config.version_policy, candidates)

    def _target(self, model: ModelRecord, version: str) -> str:
        scan = self._scan.models.get(model.name) if self._scan is not None else None
        version_scan = scan.versions.get(version) if scan is not None else None
        stamp = version_scan.accepted_stamp if version_scan is not None else None
        config = build_signature(model.config) if model.config is not None else "invalid"
        return f"{stamp}:{config}"

    def _record(self, model: str, version: str) -> VersionRecord | None:
        owner = self.models.get(model)
        return None if owner is None else owner.versions.get(version)

    def take_passed_over(self) -> list[PassedOver]:
        """The versions passed over since the last call (oldest first), for the hooks; cleared."""
        passed, self._passed_over = self._passed_over, []
        return passed

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        return index_entries(self.models.values(), ready_only=ready_only)

    def config(self, model: str) -> ModelRepoConfig | None:
        record = self.models.get(model)
        return None if record is None else record.config

    def known(self, name: str) -> bool:
        return name in self.models


def _update_config(model: ModelRecord, scan: ModelScan) -> None:
    """Parse the model's ``config.yaml`` when its text changed; an invalid config is kept as the
    error (versions not yet serving show it as FAILED; what serves keeps serving)."""
    parsed = model.config is not None or model.config_error is not None
    if parsed and scan.config_text == model.config_text and scan.config_error is None:
        return
    model.config_text = scan.config_text
    where = f"{scan.name}/{CONFIG_FILE}"
    try:
        if scan.config_error is not None:
            raise ConfigError(scan.config_error)
        model.config, model.config_error = parse_model_config(scan.config_text, where=where), None
    except ConfigError as exc:
        model.config, model.config_error = None, str(exc)


def _idle_reason(model: ModelRecord, version: str, served: list[str]) -> str:
    if model.unloaded:
        return "unloaded on request"
    newer = [v for v in served if version_order(v) > version_order(version)]
    return f"superseded by version {newer[-1]}" if newer else "not selected by the version policy"
