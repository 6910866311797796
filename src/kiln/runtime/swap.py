"""Version operations of one model, run one at a time on its control thread: load and swap,
rollback, unload, and the drain that releases a replaced version.

Nothing here runs on the request path. A swap is one reference update in the version table; the
replaced version stops admitting at once, finishes the requests pinned to it (bounded by
``drain_timeout_s``), then its instances and engines are closed and every reference to them dropped.
The next operation starts only after that, so at most two versions are resident during a swap
(plus any the version policy keeps for rollback).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from kiln._clock import Clock
from kiln.compile.backends.base import Engine
from kiln.errors import NotReady, describe
from kiln.runtime.batching.batcher import Batcher
from kiln.runtime.checks import GoldenSet
from kiln.runtime.config import ModelConfig
from kiln.runtime.engine import LoadedVersion
from kiln.runtime.fallback import Route
from kiln.runtime.faults import FaultInjector
from kiln.runtime.lifecycle import VersionLifecycle, VersionState, VersionStatus
from kiln.runtime.loader import EngineSource, VersionHandle, VersionSource, build_version
from kiln.runtime.stats import Counter, Stats
from kiln.runtime.versions import VersionTable, version_status

log = logging.getLogger("kiln.runtime")
T = TypeVar("T")


class VersionControl:
    """Loads, swaps, rolls back and unloads the versions of one model (see the module docstring)."""

    def __init__(
        self,
        model: str,
        config: ModelConfig,
        *,
        table: VersionTable,
        batcher: Batcher,
        injectors: Mapping[Route, FaultInjector],
        stats: Stats,
        clock: Clock,
    ) -> None:
        self.model, self.config = model, config
        self._table, self._batcher, self._injectors = table, batcher, injectors
        self._stats, self._clock = stats, clock
        self._sources: dict[str, VersionSource | None] = {}
        self._load_ids = itertools.count(1)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kiln-{model}-control")

    def load(
        self, version: str, engine: EngineSource, fallback: EngineSource | None, golden: GoldenSet | None
    ) -> VersionHandle:
        source = VersionSource(version, engine, fallback, golden)
        load_id, lifecycle = self._new_record(version)
        future = self._executor.submit(self._load_and_activate, source, load_id, lifecycle)
        return VersionHandle(version, future, lifecycle)

    def rollback(self) -> VersionHandle:
        target = self._table.rollback_target()
        future: Future[VersionStatus] = Future()
        handle = VersionHandle(target, future, None)
        self._executor.submit(_run_into, future, partial(self._rollback, handle))
        return handle

    def unload(self, version: str | None) -> VersionHandle:
        future: Future[VersionStatus] = Future()
        handle = VersionHandle(version or "", future, None)
        self._executor.submit(_run_into, future, partial(self._unload, version, handle))
        return handle

    def shutdown(self, *, wait: bool) -> None:
        self._executor.shutdown(wait=wait)

    def _status(self, lifecycle: VersionLifecycle, loaded: LoadedVersion | None) -> VersionStatus:
        return version_status(lifecycle, loaded, self._table.active)

    def _new_record(self, version: str) -> tuple[int, VersionLifecycle]:
        load_id, lifecycle = next(self._load_ids), VersionLifecycle(version, self._clock)
        self._table.add_record(load_id, lifecycle)
        return load_id, lifecycle

    def _make(
        self, load_id: int, lifecycle: VersionLifecycle, engine: Engine, fallback: Engine | None
    ) -> LoadedVersion:
        return LoadedVersion(
            model=self.model, lifecycle=lifecycle, load_id=load_id, engine=engine, fallback=fallback,
            config=self.config, injectors=self._injectors, clock=self._clock, model_stats=self._stats,
        )  # fmt: skip

    def _build(
        self, source: VersionSource, load_id: int, lifecycle: VersionLifecycle
    ) -> LoadedVersion | None:
        make = partial(self._make, load_id, lifecycle)
        loaded = build_version(
            source,
            lifecycle,
            make,
            check_finite=self.config.versions.check_finite,
            resident_bytes=lambda: sum(v.memory_bytes() for v in self._table.resident()),
        )
        if loaded is None:
            self._stats.count(Counter.LOAD_FAILURES)
        return loaded

    def _load_and_activate(
        self, source: VersionSource, load_id: int, lifecycle: VersionLifecycle
    ) -> VersionStatus:
        loaded = self._build(source, load_id, lifecycle)
        if loaded is not None:
            self._sources[source.version] = source if source.reloadable else None
            self._activate(loaded, push=True)
            remembered = set(self._table.history())
            for version in [v for v in self._sources if v not in remembered]:
                del self._sources[version]
        return self._status(lifecycle, loaded)

    def _rollback(self, handle: VersionHandle) -> VersionStatus:
        target = self._table.rollback_target()
        loaded = self._table.find_ready(target)
        if loaded is None:
            source = self._sources.get(target)
            load_id, lifecycle = self._new_record(target)
            handle.attach(lifecycle)
            if source is None:
                lifecycle.move(VersionState.FAILED, _not_reloadable(target))
                return self._status(lifecycle, None)
            loaded = self._build(source, load_id, lifecycle)
            if loaded is None:
                return self._status(lifecycle, None)
        handle.attach(loaded.lifecycle)
        self._table.pop_history(target)
        self._activate(loaded, push=False)
        self._stats.count(Counter.ROLLBACKS)
        return self._status(loaded.lifecycle, loaded)

    def _unload(self, version: str | None, handle: VersionHandle) -> VersionStatus:
        doomed = self._table.retire(version)
        for loaded in doomed:
            handle.attach(loaded.lifecycle)
            self._release(loaded)
        if not doomed:
            lifecycle = VersionLifecycle(version or "", self._clock)
            return VersionStatus(
                lifecycle.version, VersionState.UNLOADED, "nothing to unload", False, lifecycle.since_s
            )
        return self._status(doomed[-1].lifecycle, None)

    def _activate(self, new: LoadedVersion, *, push: bool) -> None:
        previous, evicted = self._table.activate(new, push=push)
        if previous is not None:
            self._stats.count(Counter.SWAPS)
        log.info("%s: version %s is active (was %s)", self.model, new.version, previous and previous.version)
        for old in evicted:
            self._release(old)

    def _release(self, old: LoadedVersion) -> None:
        timeout_s = self.config.versions.drain_timeout_s
        if not self._table.wait_unpinned(old, timeout_s):
            log.warning(
                "%s: version %s still busy after %ss; failing its queued requests",
                self.model,
                old.version,
                timeout_s,
            )
            error = NotReady(
                describe(f"version {old.version} of {self.model!r} was released", fix="retry the request")
            )
            self._batcher.fail_version_threadsafe(old.load_id, error)
            self._table.wait_unpinned(old, timeout_s)
        old.close(timeout_s)
        old.lifecycle.move(VersionState.UNLOADED)
        self._table.remove(old)
        self._batcher.forget_version_threadsafe(old.load_id)
        log.info("%s: version %s released", self.model, old.version)


def _run_into(future: Future[T], fn: Callable[[], T]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except BaseException as exc:
        future.set_exception(exc)


def _not_reloadable(version: str) -> str:
    return (
        f"version {version} was released and cannot be loaded again: its engine was given as an "
        "object, not a factory; give load_version a factory, or keep it loaded with max_loaded_versions >= 2"
    )
