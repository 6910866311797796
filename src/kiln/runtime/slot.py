"""ModelSlot: one served model. Requests in through :meth:`ModelSlot.infer`; versions in, out and
back through :meth:`load_version`, :meth:`unload` and :meth:`rollback`, which return at once and
do their work on the model's control thread, never on the request path.

A new version is loaded, warmed up (on the batch sizes its engine needs) and checked while the active
version keeps serving; then one reference swap makes it active. Each request is pinned to the version it was
admitted on and finishes there. The replaced version drains (bounded by ``drain_timeout_s``) and is
released, unless the version policy keeps it loaded for an instant rollback.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from kiln._clock import SYSTEM_CLOCK, Clock
from kiln.errors import ConfigError, InvalidInput, KilnError, NotReady, describe
from kiln.runtime.batching.batcher import Batcher, Served
from kiln.runtime.batching.policy import BatchLimits
from kiln.runtime.checks import GoldenSet
from kiln.runtime.config import ModelConfig, settings_needing_reload
from kiln.runtime.engine import LoadedVersion
from kiln.runtime.fallback import Health, Route, RoutingChange
from kiln.runtime.faults import FaultCounts, FaultInjector, FaultSpec
from kiln.runtime.loader import EngineSource, VersionHandle
from kiln.runtime.results import InferResult, ModelStatus
from kiln.runtime.stats import Counter, ModelStats, Stats
from kiln.runtime.swap import VersionControl
from kiln.runtime.versions import VersionTable, version_status
from kiln.types import Tensors

log = logging.getLogger("kiln.runtime")


class ModelSlot:
    """One served model: versions, batcher, fault injection, fallback probing and stats."""

    def __init__(self, name: str, config: ModelConfig | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if not name:
            raise ConfigError(describe("a model needs a name", seen=name))
        self.name = name
        self.config = config or ModelConfig()
        self._clock = clock
        self._table = VersionTable(name, self.config.versions)
        self._injectors = {Route.PRIMARY: FaultInjector(), Route.FALLBACK: FaultInjector()}
        self._stats = Stats(name)
        limits = BatchLimits.from_config(self.config.batching)
        self.batcher = Batcher(name, limits, max_queue_size=self.config.batching.max_queue_size, clock=clock)
        self._control = VersionControl(
            name,
            self.config,
            table=self._table,
            batcher=self.batcher,
            injectors=self._injectors,
            stats=self._stats,
            clock=clock,
        )
        self._probe_task: asyncio.Task[None] | None = None
        self._closed = False

    def reconfigure(self, config: ModelConfig) -> None:
        """Take ``config`` now while serving: its :data:`LIVE_BATCHING_FIELDS` (queue delay and
        size, default timeout, dispatch when idle) apply from the next batch decision. Any other
        difference raises ``ConfigError`` naming the settings, and nothing changes: those reach
        only versions loaded after an unload of the model."""
        pending = settings_needing_reload(self.config, config)
        if pending:
            raise ConfigError(
                describe(
                    f"model {self.name!r}: these settings apply only to versions loaded after an unload",
                    seen=", ".join(pending),
                    fix="unload and load the model (or restart) to apply them",
                )
            )
        batching = config.batching
        self.config = config
        self._control.config = config
        self.batcher.limits = replace(
            self.batcher.limits,
            max_queue_delay_s=batching.max_queue_delay_s,
            dispatch_when_idle=batching.dispatch_when_idle,
        )
        self.batcher.max_queue_size = batching.max_queue_size
        self.batcher.wake()

    # -- requests ---------------------------------------------------------------------------

    async def infer(
        self,
        inputs: Tensors,
        *,
        priority: int = 0,
        timeout_s: float | None = None,
        version: str | None = None,
    ) -> InferResult:
        """Run one request (batch axis 0) and return its outputs and how it was served.

        ``priority``: higher runs first. ``timeout_s``: the request fails with ``DeadlineExceeded``
        if it has not started by then (default: the model's ``default_timeout_s``). ``version``:
        a READY version by name instead of the active one. Raises ``InvalidInput``, ``NotReady``,
        ``ModelNotFound``, ``Overloaded`` (queue full, at once), ``DeadlineExceeded``,
        ``EngineFailed`` or ``EngineDead`` (retries and fallback spent).
        """
        arrival_s = self._clock.now()
        try:
            target = self._table.pin(version)
        except KilnError as exc:
            self._stats.record_failure(type(exc).__name__, 0)
            raise
        try:
            served = await self._submit(target, inputs, priority, timeout_s, arrival_s)
        except asyncio.CancelledError:
            target.stats.record_failure("Cancelled", self._elapsed_ns(arrival_s))
            raise
        except Exception as exc:
            target.stats.record_failure(type(exc).__name__, self._elapsed_ns(arrival_s))
            raise
        finally:
            self._table.unpin(target)
        return self._result(target, served, arrival_s)

    async def _submit(
        self, target: LoadedVersion, inputs: Tensors, priority: int, timeout_s: float | None, arrival_s: float
    ) -> Served:
        self._start_background()
        rows, key = target.prepare(inputs)
        timeout = self.config.batching.default_timeout_s if timeout_s is None else timeout_s
        if timeout is not None and not timeout > 0:
            raise InvalidInput(describe("timeout_s must be > 0", seen=timeout, fix="give seconds, or None"))
        request_id, future = self.batcher.submit(
            target,
            inputs,
            key=key,
            rows=rows,
            priority=priority,
            arrival_s=arrival_s,
            deadline_s=None if timeout is None else arrival_s + timeout,
        )
        try:
            return await future
        except asyncio.CancelledError:
            self.batcher.discard(request_id)
            raise

    def _result(self, target: LoadedVersion, served: Served, arrival_s: float) -> InferResult:
        o = served.outcome
        queue_ns = max(0, int((served.started_s - arrival_s) * 1e9))
        target.stats.record_success(
            queue_ns=queue_ns,
            input_ns=o.input_ns,
            infer_ns=o.infer_ns,
            output_ns=o.output_ns,
            total_ns=self._elapsed_ns(arrival_s),
        )
        return InferResult(
            o.outputs[served.index], self.name, target.version, o.route,
            queue_ns, o.input_ns, o.infer_ns, o.output_ns, served.padded_rows, o.retries,
        )  # fmt: skip

    def _elapsed_ns(self, since_s: float) -> int:
        return max(0, int((self._clock.now() - since_s) * 1e9))

    # -- versions (control thread) ----------------------------------------------------------

    def load_version(
        self,
        version: str,
        engine: EngineSource,
        *,
        fallback: EngineSource | None = None,
        golden: GoldenSet | None = None,
    ) -> VersionHandle:
        """Start loading ``version`` in the background; returns at once.

        ``engine`` (and ``fallback``, the engine used while the primary is unhealthy or dead) is a
        loaded Engine or a factory. The version is warmed up (``kiln.runtime.warmup``) and checked
        (outputs vs signature, NaN/Inf, ``golden`` within its tolerance) before one atomic swap
        makes it active. On any failure it is FAILED with the reason and never serves.
        """
        self._check_open()
        if not version:
            raise ConfigError(describe("a version needs a name", seen=version))
        return self._control.load(version, engine, fallback, golden)

    def rollback(self) -> VersionHandle:
        """Make the previously active version active again (instantly when still loaded, else
        loaded again from its factory). ``ModelNotFound`` when there is no earlier version."""
        self._check_open()
        return self._control.rollback()

    def unload(self, version: str | None = None) -> VersionHandle:
        """Stop admitting to ``version`` (every version when ``None``), drain and release it."""
        self._check_open()
        return self._control.unload(version)

    # -- health, faults, status -------------------------------------------------------------

    def is_ready(self) -> bool:
        active = self._table.active
        return active is not None and (active.router.health is not Health.DEAD or active.router.has_fallback)

    def is_live(self) -> bool:
        return all(v.router.health is not Health.DEAD for v in self._table.resident())

    def set_faults(self, spec: FaultSpec | None, *, target: Route | str = Route.PRIMARY) -> None:
        """Inject faults into every run of this model's primary (or fallback) engine; ``None`` clears."""
        self._injectors[Route(target)].set(spec)

    def fault_counts(self, target: Route | str = Route.PRIMARY) -> FaultCounts:
        return self._injectors[Route(target)].counts()

    async def probe(self) -> list[RoutingChange]:
        """Probe every version whose primary is unhealthy or dead and due for a probe; the
        routing changes made (traffic back on the primary after a good probe)."""
        changes: list[RoutingChange] = []
        for version in self._table.resident():
            if not version.router.probe_due(self._clock.now()):
                continue
            ok, reason = await asyncio.to_thread(version.probe_primary)
            version.stats.count(Counter.PROBES)
            change = version.router.probe_result(ok=ok, reason=reason, now_s=self._clock.now())
            if change is not None:
                version.note_change(change)
                changes.append(change)
        return changes

    def status(self) -> ModelStatus:
        active = self._table.active
        resident = {v.load_id: v for v in self._table.resident()}
        versions = tuple(version_status(lc, resident.get(i), active) for i, lc in self._table.records())
        return ModelStatus(
            name=self.name,
            ready=self.is_ready(),
            live=self.is_live(),
            active_version=None if active is None else active.version,
            versions=versions,
            queue_size=self.batcher.queue_size,
            running_batches=self.batcher.running_batches,
            memory_bytes=sum(v.memory_bytes() for v in resident.values()),
            inputs=() if active is None else active.inputs,
            outputs=() if active is None else active.outputs,
            max_batch_size=self.config.batching.max_batch_size if active and active.batchable else 0,
        )

    def stats(self) -> ModelStats:
        resident = sorted(self._table.resident(), key=lambda v: v.load_id)
        return ModelStats(self._stats.snapshot(), tuple(v.stats.snapshot() for v in resident))

    # -- background and shutdown ------------------------------------------------------------

    def _start_background(self) -> None:
        if not self.config.fallback.probe_in_background:
            return
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_forever())

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.fallback.probe_interval_s)
            try:
                await self.probe()
            except Exception:
                log.exception("%s: probe failed", self.name)

    def _check_open(self) -> None:
        if self._closed:
            raise NotReady(describe(f"model {self.name!r} is shut down", fix="create a new slot"))

    async def aclose(self) -> None:
        """Unload every version (draining its requests), stop the batcher and the probes."""
        if self._closed:
            return
        self._closed = True
        await self._control.unload(None).wait()
        await self.batcher.aclose(NotReady(f"model {self.name!r} is shut down"))
        if self._probe_task is not None:
            self._probe_task.cancel()
        self._control.shutdown(wait=False)

    def close(self) -> None:
        """Like :meth:`aclose` for code outside the event loop (after it has stopped)."""
        if self._closed:
            return
        self._closed = True
        self._control.unload(None).result()
        self._control.shutdown(wait=True)
