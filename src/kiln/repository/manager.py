"""RepositoryManager: the model repository driving a runtime (the server's ``ModelControl``).

It lives on the server's event loop and does what :class:`~kiln.repository.reconcile.Reconciler`
decides: scans the folder (in a thread), builds engines through a :class:`~kiln.repository.build.Builder`
(a niced worker process by default), loads them into the :class:`~kiln.runtime.Runtime` (whose
control threads load, warm up, check and swap), and unloads removed versions. Nothing here blocks
the loop: every call returns at once and the work goes on in tasks. It reports engine builds and
loads to ``/metrics`` (:class:`~kiln.server.metrics_events.BuildMetrics`-like ``metrics``) and each
loaded engine's efficiency factor to metering (:class:`~kiln.metering.EfficiencyTable`). Its
:class:`~kiln.repository.hooks.VersionHooks` check each version before its build (a rejected version
is FAILED and never built) and hear when one serves or fails.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from kiln._clock import Clock, MonotonicClock
from kiln.compile.backends.base import Backend, Engine, EngineArtifact, LoadOptions
from kiln.compile.registry import create_backend
from kiln.compile.spec import BuildSpec
from kiln.errors import ConfigError, KilnError, ModelNotFound, describe
from kiln.metering.epu import EfficiencyTable
from kiln.repository.build import Builder, BuildJob, BuildOutcome, create_builder
from kiln.repository.control import IndexEntry
from kiln.repository.convert import build_spec, fallback_spec, load_options, runtime_config, sample_dirs
from kiln.repository.diff import diff
from kiln.repository.hooks import NoHooks, ServingVersion, VersionHooks, VersionVerdict
from kiln.repository.layout import MODEL_FILE
from kiln.repository.options import BuildEvents, EngineLoader, RepositoryOptions
from kiln.repository.reconcile import Build, PassedOver, Reconciler, Unload
from kiln.repository.scan import RepoScan, read_repository, settle
from kiln.repository.watcher import Watcher
from kiln.runtime import ModelConfig, Runtime, VersionState
from kiln.runtime.config import settings_needing_reload, with_live_settings

log = logging.getLogger("kiln.repository")
_GONE = frozenset({VersionState.UNLOADED, VersionState.FAILED})


class RepositoryManager:
    """The model repository at ``root`` serving through ``runtime``; implements ``ModelControl``.

    ``await start()`` scans (twice, ``settle_s`` apart), queues the builds of every served version
    and starts polling; the server may listen at once: it reports ready when every model that has
    a complete version serves one. ``await aclose()`` stops polling and the builders (the runtime
    is the caller's to close).
    """

    def __init__(
        self,
        root: Path,
        runtime: Runtime,
        *,
        options: RepositoryOptions | None = None,
        builder: Builder | None = None,
        metrics: BuildEvents | None = None,
        efficiency: EfficiencyTable | None = None,
        loader: EngineLoader | None = None,
        clock: Clock | None = None,
        hooks: VersionHooks | None = None,
    ) -> None:
        self.root = root
        self.hooks: VersionHooks = hooks or NoHooks()
        self.runtime = runtime
        self.options = options or RepositoryOptions()
        opts = self.options
        self.builder = builder or create_builder(
            opts.build_in, max_workers=opts.build_workers, nice=opts.build_nice
        )
        self.metrics = metrics
        self.efficiency = efficiency
        self.clock = clock or MonotonicClock()
        self._loader = loader
        self._backends: dict[str, Backend] = {}
        self._lock = threading.RLock()
        self.reconciler = Reconciler(self.clock, max_builds=opts.build_workers)
        self.scan: RepoScan | None = None
        self._outcomes: dict[tuple[str, str, str], BuildOutcome] = {}
        self._started_s: dict[tuple[str, str, str], float] = {}
        self._check_s: dict[tuple[str, str, str], float] = {}
        self._registered: dict[str, ModelConfig] = {}
        self._batchable: dict[str, bool] = {}  # whether the registered engines have a batch axis
        self._paths: dict[tuple[str, str], str] = {}
        self._priced: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.watcher = Watcher(self.step, opts.poll_interval_s)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """First scans and builds, then polling (see the class docstring)."""
        self._loop = asyncio.get_running_loop()
        await self.step()
        if self.options.settle_s > 0:
            await asyncio.sleep(self.options.settle_s)
            await self.step()
        self.watcher.start()

    async def step(self, trusted: frozenset[str] = frozenset()) -> None:
        """One poll: scan the folder (in a thread), take in the changes, act on the plan."""
        self._loop = asyncio.get_running_loop()
        folder = await asyncio.to_thread(read_repository, self.root)
        with self._lock:
            scan = settle(
                self.scan, folder, now_s=self.clock.now(), settle_s=self.options.settle_s, trusted=trusted
            )
            for change in diff(self.scan, scan):
                log.info("repository: %s", change)
            self.scan = scan
            self.reconciler.observe_scan(scan)
        self._reconcile()

    async def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no build, load or unload is in flight; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        await self.watcher.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.builder.shutdown()

    # -- ModelControl ------------------------------------------------------------------------

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        with self._lock:
            return self.reconciler.index(ready_only=ready_only)

    def load(self, name: str) -> list[IndexEntry]:
        """Serve ``name`` (again), retry its failed versions and rebuild and reload its served
        ones (cache hits when nothing changed), rescanning its folder at once. Returns at once."""
        with self._lock:
            self._check_known(name)
            self.reconciler.request_load(name)
        self._reconcile()
        self.watcher.wake(trusted=name)
        return self._entries(name, "load requested")

    def unload(self, name: str) -> list[IndexEntry]:
        """Stop serving every version of ``name`` until the next ``load(name)``. Returns at once."""
        with self._lock:
            self._check_known(name)
            self.reconciler.request_unload(name)
        self._reconcile()
        return self._entries(name, "unload requested")

    def build_path(self, model: str, version: str) -> str | None:
        """How the engine serving ``model``/``version`` was obtained from the cache: ``hit``,
        ``build``, ``refit`` (new weights into a cached structure), ``calibration-reuse`` or
        ``recalibrate``; ``None`` before that version has served."""
        return self._paths.get((model, version))

    def _check_known(self, name: str) -> None:
        if not self.reconciler.known(name) and not (self.root / name).is_dir():
            known = sorted(self.reconciler.models)
            raise ModelNotFound(
                describe(f"the repository has no model {name!r}", fix=f"models in {self.root}: {known}")
            )

    def _entries(self, name: str, reason: str) -> list[IndexEntry]:
        entries = [e for e in self.index() if e.name == name]
        return entries or [IndexEntry(name, "", "LOADING" if "load" in reason else "UNAVAILABLE", reason)]

    # -- acting on the plan ------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Plan and act; on the loop's thread (scheduled there when called from another)."""
        loop = self._loop
        if loop is None:
            return  # not started: the first step plans
        if not _on(loop):
            loop.call_soon_threadsafe(self._reconcile)
            return
        with self._lock:
            for name in self.reconciler.models:
                self.reconciler.observe_runtime(name, self._ready_versions(name))
            self._forget_released()
            self._apply_config_changes()
            actions = self.reconciler.plan()
        self._tell_passed_over()
        for action in actions:
            if isinstance(action, Build):
                self._spawn(self._build(action))
            elif isinstance(action, Unload):
                self._spawn(self._unload(action))

    def _tell_passed_over(self) -> None:
        """Tell the hooks of the versions the reconciler passed over (off the loop, in order)."""
        with self._lock:
            passed = self.reconciler.take_passed_over()
        if passed:
            self._spawn(asyncio.to_thread(self._passed_over, passed))

    def _passed_over(self, passed: list[PassedOver]) -> None:
        for item in passed:
            try:
                self.hooks.on_superseded(item.model, item.version, item.reason)
            except Exception:
                log.exception("the hook for passed-over %s/%s failed", item.model, item.version)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget_released(self) -> None:
        """Drop the efficiency factors of versions the runtime released (replaced and drained):
        requests still draining on a replaced version are priced at its factor until then."""
        for model, version in list(self._priced):
            resident = model in self.runtime.models and any(
                v.version == version and v.state not in _GONE
                for v in self.runtime.model(model).status().versions
            )
            if not resident:
                self._priced.discard((model, version))
                if self.efficiency is not None:
                    self.efficiency.forget(model, version)

    def _ready_versions(self, name: str) -> set[str]:
        if name not in self.runtime.models:
            return set()
        status = self.runtime.model(name).status()
        return {v.version for v in status.versions if v.state is VersionState.READY}

    async def _build(self, action: Build) -> None:
        key = (action.model, action.version, action.target)
        checked = self.clock.now()
        verdict = await asyncio.to_thread(self._before_build, action)
        self._started_s[key] = self.clock.now()
        self._check_s[key] = self._started_s[key] - checked
        if not verdict.accept:
            outcome = BuildOutcome(_no_job(action), None, None, 0.0, error=f"rejected: {verdict.reason}")
        else:
            try:
                job = self._job(action)
            except KilnError as exc:
                outcome = BuildOutcome(_no_job(action), None, None, 0.0, error=f"build failed: {exc}")
            else:
                outcome = await asyncio.wrap_future(self.builder.submit(job))
        self._report_build(action, outcome)
        with self._lock:
            load = self.reconciler.build_done(
                action.model, action.version, action.target, error=outcome.error, summary=outcome.summary()
            )
        if load:
            await self._load(action, outcome)
        else:
            self._started_s.pop(key, None)
            self._check_s.pop(key, None)
            if outcome.error is not None:
                await asyncio.to_thread(self.hooks.on_failed, action.model, action.version, outcome.error)
        self._reconcile()

    def _before_build(self, action: Build) -> VersionVerdict:
        """The hooks' verdict on a version about to be built; a hook that raises rejects it (a
        version nobody could check never serves)."""
        try:
            return self.hooks.before_build(
                action.model, action.version, self.root / action.model / action.version
            )
        except Exception as exc:
            log.exception("the check of %s/%s failed", action.model, action.version)
            return VersionVerdict(False, f"the version check failed: {type(exc).__name__}: {exc}")

    def _job(self, action: Build) -> BuildJob:
        config = self.reconciler.config(action.model)
        if config is None:
            raise ConfigError(f"{action.model}: config.yaml is invalid")
        folder = self.root / action.model
        dirs = sample_dirs(config, folder)
        return BuildJob(
            action.model,
            action.version,
            folder / action.version / MODEL_FILE,
            build_spec(config),
            fallback_spec(config),
            dirs.calibration,
            dirs.validation,
            self.options.cache_dir,
            self.options.lock_timeout_s,
        )

    def _report_build(self, action: Build, outcome: BuildOutcome) -> None:
        where = f"{action.model}/{action.version}"
        if not outcome.ok:
            log.error("%s not served: %s", where, outcome.error)
            return
        log.info("%s: %s", where, outcome.summary())
        if self.metrics is not None:
            for report in (outcome.primary, outcome.fallback):
                if report is not None:
                    self.metrics.observe_build(action.model, report.path, report.build_seconds)

    async def _load(self, action: Build, outcome: BuildOutcome) -> None:
        assert outcome.primary is not None
        model, version, target = action.model, action.version, action.target
        artifact = outcome.primary.artifact
        fallback = outcome.fallback.artifact if outcome.fallback is not None else None
        try:
            await self._register(model, artifact)
            self._price(model, version, artifact)
            handle = self.runtime.load_version(
                model,
                version,
                self._engine_loader(model, artifact, fallback=False),
                fallback=self._engine_loader(model, fallback, fallback=True)
                if fallback is not None
                else None,
            )
            status = await handle.wait()
            ok, why = status.state is VersionState.READY, status.reason or status.state
        except KilnError as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        seconds = self.clock.now() - self._started_s.pop((model, version, target), self.clock.now())
        check_s = self._check_s.pop((model, version, target), 0.0)
        if ok:
            reason = f"{outcome.summary()}; ready {seconds:.2f} s after its build started"
            self._paths[(model, version)] = outcome.primary.path
            self._loaded(model, version, artifact, seconds)
        else:
            reason = f"load failed: {why}"
            log.error("%s/%s not served: %s", model, version, reason)
        with self._lock:
            self.reconciler.load_done(model, version, target, ok=ok, reason=reason)
        if ok:
            event = ServingVersion(
                model,
                version,
                self.root / model / version,
                outcome.primary.path,
                outcome.primary.build_seconds,
                seconds,
                check_s,
            )
            await asyncio.to_thread(self.hooks.on_serving, event)
        else:
            await asyncio.to_thread(self.hooks.on_failed, model, version, reason)

    def _loaded(self, model: str, version: str, artifact: EngineArtifact, seconds: float) -> None:
        log.info("%s/%s is READY (%.2f s from the start of its build)", model, version, seconds)
        if self.metrics is not None:
            self.metrics.observe_load(model, seconds)

    def _price(self, model: str, version: str, artifact: EngineArtifact) -> None:
        """Meter ``version`` at its engine's efficiency factor from the moment it may serve."""
        if self.efficiency is None:
            return
        try:
            self.efficiency.set(model, version, artifact.manifest.efficiency_factor)
        except ConfigError as exc:
            log.warning("%s/%s: %s; its usage counts 1.0 EPU per device-second", model, version, exc)
        self._priced.add((model, version))

    async def _register(self, model: str, artifact: EngineArtifact) -> None:
        """Register ``model`` with the runtime config its ``config.yaml`` asks for; re-register when
        that changed and nothing of the model is resident; while it serves, apply the batcher's
        settings at once and keep the rest for the next unload/load, saying so."""
        config = self.reconciler.config(model)
        assert config is not None
        batchable = all(t.shape[:1] == (-1,) for t in artifact.manifest.inputs)
        wanted = runtime_config(config, batchable=batchable)
        self._batchable[model] = batchable
        record = self.reconciler.models[model]
        if model in self.runtime.models:
            if self._registered.get(model) == wanted:
                return
            slot = self.runtime.model(model)
            states = {v.state for v in slot.status().versions}
            if states - {VersionState.UNLOADED, VersionState.FAILED}:
                self._reconfigure(model, wanted)
                return
            await self.runtime.remove_model(model)
        self.runtime.add_model(model, wanted)
        self._registered[model] = wanted
        record.notice = ""

    def _apply_config_changes(self) -> None:
        """Serving models whose config.yaml now asks for other serving settings (see
        :meth:`_reconfigure`); a version load re-registers the rest."""
        for model, registered in list(self._registered.items()):
            config = self.reconciler.config(model)
            if config is None or model not in self.runtime.models:
                continue
            wanted = runtime_config(config, batchable=self._batchable.get(model, True))
            if wanted != registered:
                self._reconfigure(model, wanted)

    def _reconfigure(self, model: str, wanted: ModelConfig) -> None:
        """A serving model's config.yaml changed: the batcher's settings apply now; the others
        (batch sizes, instances, versions kept...) after an unload and a load, as the notice says."""
        record = self.reconciler.models[model]
        registered = self._registered[model]
        live = with_live_settings(registered, wanted)
        if live != registered:
            self.runtime.model(model).reconfigure(live)
            self._registered[model] = live
            log.info("%s: config.yaml's batcher settings applied while serving", model)
        pending = settings_needing_reload(live, wanted)
        record.notice = (
            f"config.yaml changed {', '.join(pending)}: they apply after an unload and a load of the "
            "model, or a restart"
            if pending
            else ""
        )

    async def _unload(self, action: Unload) -> None:
        model, version = action.model, action.version
        if model in self.runtime.models:
            await self.runtime.unload(model, version).wait()
        if self.efficiency is not None:
            self.efficiency.forget(model, version)
        log.info("%s/%s unloaded", model, version)
        with self._lock:
            self.reconciler.unload_done(model, version)
            record = self.reconciler.models.get(model)
            empty = record is not None and not record.versions
            if empty and record is not None and not record.in_repo:
                del self.reconciler.models[model]
        if empty and model in self.runtime.models and not self._ready_versions(model):
            await self.runtime.remove_model(model)  # nothing left to show: the model is gone
            self._registered.pop(model, None)
        self._reconcile()

    def _engine_loader(self, model: str, artifact: EngineArtifact, *, fallback: bool) -> Callable[[], Engine]:
        """What loads ``artifact`` for ``model``: the injected loader, else the backend's with the
        model's instance count (:func:`load_options`)."""
        if self._loader is not None:
            return partial(self._loader, artifact)
        options = load_options(
            self._registered.get(model), fallback=fallback, intra_op_threads=self.options.intra_op_threads
        )
        return partial(self._load_artifact, artifact, options)

    def _load_artifact(self, artifact: EngineArtifact, options: LoadOptions) -> Engine:
        name = artifact.manifest.backend
        backend = self._backends.get(name)
        if backend is None:
            backend = self._backends[name] = create_backend(name)
        return backend.load(artifact, options)


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _no_job(action: Build) -> BuildJob:
    return BuildJob(action.model, action.version, Path(MODEL_FILE), BuildSpec())
