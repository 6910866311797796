"""obtain_engine: serve an engine from the cache, or make it (refit, reuse calibration, build).

The decision is :func:`kiln.cache.plan.plan_build`; this module only acts on it, under the key's
lock, so that one process builds a key while the others wait and then find the finished entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from kiln._clock import Clock
from kiln.cache.key import EngineKey, engine_key
from kiln.cache.plan import accuracy_drop, check_accuracy, check_target, plan_build, regression
from kiln.cache.store import EngineStore
from kiln.compile.backends.base import (
    REFIT_REPRODUCES,
    BuildOutput,
    BuildPath,
    EngineArtifact,
    Manifest,
    Progress,
    Target,
)
from kiln.errors import AccuracyError, CacheCorrupt, RefitUnsupported

if TYPE_CHECKING:
    from kiln.compile.spec import BuildSpec
    from kiln.model.source import ModelSource

log = logging.getLogger(__name__)

Verifier = Callable[[Path, BuildOutput], dict[str, object] | None]
"""Checks a built engine against the fp32 reference: ``(artifact_dir, build_output)`` in, the
accuracy report (with a numeric ``drop``) out, or ``AccuracyError``. Must not write into the folder."""

Work = Callable[[Path], BuildOutput]


@runtime_checkable
class ChecksUpdates(Protocol):
    """A ``Verifier`` that checks weight-only updates its own way (e.g. on fewer samples first)."""

    def check_update(
        self, artifact_dir: Path, output: BuildOutput, baseline: Mapping[str, object] | None
    ) -> dict[str, object] | None:
        """Like calling the verifier, for an engine updated from one whose accuracy was
        ``baseline``; must measure enough to decide the bound and :func:`regression` reliably."""
        ...


class BuildBackend(Protocol):
    """The part of :class:`kiln.compile.backends.base.Backend` the cache needs (any Backend fits)."""

    name: str

    def target(self) -> Target: ...

    def build(
        self,
        source: ModelSource,
        spec: BuildSpec,
        out_dir: Path,
        *,
        calibration: object | None = None,
        calibration_cache: Path | None = None,
        progress: Progress | None = None,
    ) -> BuildOutput: ...

    def refit(self, artifact: EngineArtifact, source: ModelSource, out_dir: Path) -> BuildOutput: ...


@dataclass(frozen=True)
class BuildReport:
    """How an engine was obtained.

    ``build_seconds`` is the time this call spent producing the engine once it held the key's lock
    (for a hit: verifying it); ``wait_seconds`` the time spent waiting for that lock.
    ``engine_size_bytes`` counts every file of the artifact.
    """

    key: str
    path: BuildPath
    artifact: EngineArtifact
    build_seconds: float
    wait_seconds: float
    engine_size_bytes: int
    accuracy: dict[str, object] | None
    weights_hash: str
    target_tag: str

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "path": self.path,
            "artifact": str(self.artifact.path),
            "build_seconds": self.build_seconds,
            "wait_seconds": self.wait_seconds,
            "engine_size_bytes": self.engine_size_bytes,
            "accuracy": self.accuracy,
            "weights_hash": self.weights_hash,
            "target_tag": self.target_tag,
        }


@dataclass(frozen=True)
class _Job:
    source: ModelSource
    spec: BuildSpec
    backend: BuildBackend
    store: EngineStore
    target: Target
    key: EngineKey
    calibration: object | None
    verify: Verifier | None
    progress: Progress | None
    clock: Clock


class _PerfClock:
    def now(self) -> float:
        return time.perf_counter()


def obtain_engine(
    source: ModelSource,
    spec: BuildSpec,
    backend: BuildBackend,
    store: EngineStore,
    *,
    calibration: object | None = None,
    verify: Verifier | None = None,
    progress: Progress | None = None,
    clock: Clock | None = None,
    lock_timeout_s: float | None = None,
) -> BuildReport:
    """The engine for ``source`` built per ``spec`` on ``backend``'s target, from the cache if possible.

    Exact hit (same key, same weights): checksums verified (a corrupt entry is removed and rebuilt),
    the stored accuracy re-checked against ``spec.max_accuracy_drop``. Same key, other weights:
    ``backend.refit`` from that entry; if the backend cannot refit or the refitted engine fails the
    accuracy check, a build that reuses the entry's INT8 calibration table; if that fails the
    accuracy check, a build that recalibrates. Miss: a
    full build. New engines pass ``verify`` (when given) before they are stored; one that fails is
    not stored and the error propagates.

    Raises ``BuildError`` (backend failure, entry built for another target), ``AccuracyError``,
    ``CacheBusy`` (lock not obtained within ``lock_timeout_s``).
    """
    target = backend.target()
    key = engine_key(source.fingerprint.structure_hash, spec, target)
    job = _Job(
        source, spec, backend, store, target, key, calibration, verify, progress, clock or _PerfClock()
    )
    asked = job.clock.now()
    with store.lock(key.hex, timeout_s=lock_timeout_s):
        locked = job.clock.now()
        artifact, path = _obtain_locked(job)
        done = job.clock.now()
    return BuildReport(
        key=key.hex,
        path=path,
        artifact=artifact,
        build_seconds=done - locked,
        wait_seconds=locked - asked,
        engine_size_bytes=sum(f.size_bytes for f in artifact.manifest.files.values()),
        accuracy=artifact.manifest.accuracy,
        weights_hash=source.fingerprint.weights_hash,
        target_tag=target.tag,
    )


def _obtain_locked(job: _Job) -> tuple[EngineArtifact, BuildPath]:
    weights = job.source.fingerprint.weights_hash
    while True:
        plan = plan_build(job.key, weights, job.store.entries(job.key.hex))
        for bad in plan.discard:
            log.warning("removing unreadable cache entry %s: %s", bad.path, bad.problem)
            job.store.remove(bad)
        if plan.entry is None:
            return _make(job, "build", _full_build(job)), "build"
        _note(job, f"verifying cached engine {plan.entry.id}")
        try:
            stored = job.store.open(plan.entry, keep_engine=plan.kind != "hit")
        except CacheCorrupt as err:
            log.warning("%s; removing it", err)
            job.store.remove(plan.entry)
            continue
        check_target(stored.manifest, job.target, where=f"cache entry {plan.entry.id}")
        if plan.kind == "hit":
            return _serve_hit(job, stored), "hit"
        return _from_base(job, stored)


def _serve_hit(job: _Job, artifact: EngineArtifact) -> EngineArtifact:
    manifest = artifact.manifest
    max_drop = job.spec.max_accuracy_drop
    check_accuracy(manifest.accuracy, max_drop, what=f"cached engine {artifact.path}")
    if max_drop is not None and accuracy_drop(manifest.accuracy) is None and job.verify is not None:
        accuracy = job.verify(artifact.path, _output_of(manifest))
        check_accuracy(accuracy, max_drop, what=f"cached engine {artifact.path}")
        artifact = job.store.update_manifest(artifact, replace(manifest, accuracy=accuracy))
    job.store.touch(artifact)
    return artifact


def _from_base(job: _Job, base: EngineArtifact) -> tuple[EngineArtifact, BuildPath]:
    def refit(out: Path) -> BuildOutput:
        return job.backend.refit(base, job.source, out)

    try:
        return _make(job, "refit", refit, base), "refit"
    except RefitUnsupported as err:
        log.info("refit not possible (%s); rebuilding", err)
    except _ReuseWouldMatch as err:
        log.warning(
            "refitted engine failed its accuracy check (%s); a rebuild with the stored calibration "
            "would make the same engine, so it recalibrates",
            err,
        )
        return _make(job, "recalibrate", _full_build(job)), "recalibrate"
    except AccuracyError as err:
        # A refit keeps the stored activation ranges (and weight scales the backend cannot
        # recompute); a rebuild quantizes the new weights on their own terms, which may pass.
        log.warning("refitted engine failed its accuracy check (%s); rebuilding", err)
    table = _calibration_table(base)
    if table is None:
        return _make(job, "build", _full_build(job)), "build"
    try:
        return _make(job, "calibration-reuse", _full_build(job, table), base), "calibration-reuse"
    except AccuracyError as err:
        log.warning("engine with reused calibration failed its accuracy check (%s); recalibrating", err)
        return _make(job, "recalibrate", _full_build(job)), "recalibrate"


def _full_build(job: _Job, calibration_cache: Path | None = None) -> Work:
    def work(out: Path) -> BuildOutput:
        return job.backend.build(
            job.source,
            job.spec,
            out,
            calibration=job.calibration,
            calibration_cache=calibration_cache,
            progress=job.progress,
        )

    return work


def _make(job: _Job, path: BuildPath, work: Work, base: EngineArtifact | None = None) -> EngineArtifact:
    """Run ``work`` in a staging folder, verify, and commit; nothing is left behind on failure.

    ``base``: the entry a weight-only update starts from; a warning says when the update's error
    is much larger than that entry's (:func:`kiln.cache.plan.regression`), and a refit that much
    worse fails (``AccuracyError``) so that the caller rebuilds."""
    _note(job, f"{path}: {job.source.name}")
    with job.store.staging(job.key.hex) as out:
        started = job.clock.now()
        output = work(out)
        seconds = job.clock.now() - started
        baseline = base.manifest.accuracy if base is not None else None
        accuracy = _verify(job, out, output, base is not None, baseline)
        reuse_matches = path == "refit" and output.extra.get(REFIT_REPRODUCES) == "calibration-reuse"
        try:
            check_accuracy(accuracy, job.spec.max_accuracy_drop, what=f"new engine ({path})")
        except AccuracyError as err:
            if reuse_matches:
                raise _ReuseWouldMatch(str(err)) from err
            raise
        worse = regression(accuracy, baseline)
        if worse is not None and path == "refit" and not reuse_matches:
            # A refit is kiln's own shortcut (no optimization; possibly stored weight scales): one
            # much worse than its base is not kept, bound or not; the rebuild decides instead. A
            # refit that a rebuild with the stored calibration would reproduce is judged as that
            # rebuild would be (below): rebuilding would only make the same engine again.
            raise AccuracyError(f"refit of {job.source.name}: {worse}")
        if worse is not None:
            log.warning("%s of %s: %s (max_accuracy_drop makes it recalibrate)", path, job.source.name, worse)
        return job.store.commit(out, _manifest(job, output, path, seconds, accuracy))


class _ReuseWouldMatch(AccuracyError):
    """A refit failed its accuracy bound, and a rebuild with the stored calibration would make the
    same engine (the backend said so): the cache recalibrates at once."""


def _verify(
    job: _Job, out: Path, output: BuildOutput, update: bool, baseline: Mapping[str, object] | None
) -> dict[str, object] | None:
    if job.verify is None:
        return None
    verify: object = job.verify
    if update and isinstance(verify, ChecksUpdates):
        return verify.check_update(out, output, baseline)
    return job.verify(out, output)


def _manifest(
    job: _Job, output: BuildOutput, path: BuildPath, seconds: float, accuracy: dict[str, object] | None
) -> Manifest:
    return Manifest(
        key=job.key.hex,
        backend=job.backend.name,
        engine_file=output.engine_file,
        fingerprint=job.source.fingerprint.to_json(),
        spec=job.spec.to_json(),
        target=job.target.to_json(),
        inputs=job.source.inputs,
        outputs=job.source.outputs,
        files={},
        build_path=path,
        build_seconds=seconds,
        created_at=0.0,
        accuracy=accuracy,
        calibration_file=output.calibration_file,
        extra={**output.extra, "model_name": job.source.name},
    )


def _calibration_table(base: EngineArtifact) -> Path | None:
    name = base.manifest.calibration_file
    if name is None or name not in base.manifest.files:
        return None
    return base.path / name


def _output_of(manifest: Manifest) -> BuildOutput:
    return BuildOutput(
        engine_file=manifest.engine_file,
        files=tuple(sorted(manifest.files)),
        build_path=manifest.build_path,
        calibration_file=manifest.calibration_file,
        extra=dict(manifest.extra),
    )


def _note(job: _Job, stage: str) -> None:
    if job.progress is not None:
        job.progress(stage, 0, 1)
