"""The server's operations, protocol-neutral: what both the HTTP and the gRPC front ends call.

:class:`ServerCore` stands between the protocols and kiln's serving core (:class:`~kiln.runtime.Runtime`),
the model repository (:class:`~kiln.repository.control.ModelControl`) and metering
(:class:`~kiln.metering.usage.Meter`). Requests come in as :class:`InferRequest` (tensors already
decoded to numpy), results go out as :class:`InferResponse`; metadata, configuration and
statistics as protocol JSON (see :mod:`kiln.server.model_info`). Errors are kiln's own
(``kiln.errors``); each front end maps them to its status codes in one module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from kiln import __version__
from kiln.errors import InvalidInput, ModelNotFound, NotReady, describe
from kiln.metering.usage import Meter, NullMeter, UsageEvent
from kiln.repository.control import IndexEntry, ModelControl
from kiln.runtime import FaultSpec, InferResult, ModelSlot, ModelStatus, Runtime, VersionState
from kiln.server import model_info
from kiln.server.admin_calls import AdminCall, Forwarder
from kiln.server.config import ServerConfig
from kiln.server.health import Readiness, plan_readiness
from kiln.server.model_info import JSON
from kiln.server.requests import InferRequest, InferResponse, TooLarge, Unsupported
from kiln.server.schedule import plan_schedule
from kiln.server.workers_stats import STATS_TIMEOUT_S, StatisticsReply, combine_replies
from kiln.types import Array

__all__ = [
    "EXTENSIONS",
    "InferRequest",
    "InferResponse",
    "ServerCore",
    "TooLarge",
    "Unsupported",
    "usage_event",
]

log = logging.getLogger("kiln.server")

EXTENSIONS = (
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "schedule_policy",
    "statistics",
)
"""KServe/Triton protocol extensions kiln serves (reported by server metadata)."""


class ServerCore:
    """Every operation the protocols expose. One instance per server, used on one event loop."""

    def __init__(
        self,
        runtime: Runtime,
        control: ModelControl | None = None,
        *,
        config: ServerConfig | None = None,
        meter: Meter | None = None,
        fanout: Forwarder | None = None,
    ) -> None:
        self.runtime = runtime
        self.fanout = fanout
        self.control = control
        self.config = config or ServerConfig()
        self.meter: Meter = meter or NullMeter()
        self._started = False
        self._draining = False
        self._in_flight = 0
        self._idle: asyncio.Event | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def mark_started(self) -> None:
        """Both front ends listen: readiness may turn true."""
        self._started = True

    def begin_drain(self) -> None:
        """Stop admitting inference (new requests get ``NotReady``) and report not ready."""
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait until no inference is in flight; False when ``timeout_s`` passed first."""
        if self._in_flight == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return self._in_flight == 0
        return True

    # -- health -----------------------------------------------------------------------------

    def is_live(self) -> bool:
        return self.runtime.is_live()

    def readiness(self) -> Readiness:
        index = self.control.index() if self.control is not None else []
        serving = {name: self.runtime.model(name).is_ready() for name in self.runtime.models}
        return plan_readiness(started=self._started, draining=self._draining, index=index, serving=serving)

    def is_ready(self) -> bool:
        return self.readiness().ready

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether ``name`` (at ``version``, else its active version) serves now; ``ModelNotFound``
        for a model neither the runtime nor the repository knows."""
        try:
            slot = self._slot(name)
        except NotReady:
            return False
        if version is None:
            return slot.is_ready()
        return version in model_info.ready_versions(slot.status())

    # -- metadata ---------------------------------------------------------------------------

    def server_metadata(self) -> JSON:
        return {"name": self.config.server_name, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None = None) -> JSON:
        return model_info.model_metadata(self._serving_status(name, version))

    def model_config(self, name: str, version: str | None = None) -> JSON:
        status = self._serving_status(name, version)
        return model_info.model_config(
            status,
            self.runtime.model(name).config,
            priority_levels=self.config.priority_levels,
            default_priority_level=self.config.default_priority_level,
        )

    def model_statistics(self, name: str | None = None, version: str | None = None) -> JSON:
        """Statistics of every resident version of ``name`` (every model when ``None``), or of
        one ``version``; ``ModelNotFound`` when that version is not resident."""
        names = self.runtime.models if name is None else (self._slot(name).name,)
        entries: list[JSON] = []
        for model in names:
            versions = self.runtime.model(model).stats().versions
            chosen = [v for v in versions if version is None or v.version == version]
            if version is not None and not chosen:
                raise ModelNotFound(
                    describe(
                        f"model {model!r} has no loaded version {version!r}",
                        fix=f"loaded versions: {[v.version for v in versions]}",
                    )
                )
            entries += [model_info.model_statistics(v) for v in chosen]
        return model_info.statistics_response(entries)

    async def statistics(self, name: str | None = None, version: str | None = None) -> StatisticsReply:
        """:meth:`model_statistics`, and for a worker of ``kiln serve --workers N`` (``fanout``)
        merged with every other worker's (:mod:`kiln.server.workers_stats`); a worker that does
        not answer within ``STATS_TIMEOUT_S`` is left out and named in the reply. Errors as
        :meth:`model_statistics`, decided by this worker alone."""
        own = self.model_statistics(name, version)
        if self.fanout is None:
            return StatisticsReply(own)
        replies = await self.fanout.ask(AdminCall("stats", name or ""), STATS_TIMEOUT_S)
        reply = combine_replies(own, self.fanout.worker, replies, version)
        if reply.missing:
            log.warning("statistics leave out worker(s): %s", "; ".join(reply.problems))
        return reply

    def own_statistics(self, name: str | None = None) -> JSON:
        """This process's statistics of every resident version of ``name`` (every model when
        ``None``); none, rather than an error, for a model not resident here."""
        if name is not None and name not in self.runtime.models:
            return model_info.statistics_response([])
        return self.model_statistics(name)

    # -- inference --------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        """Run one request. Raises kiln's errors: ``InvalidInput``, ``ModelNotFound``,
        ``NotReady`` (also while shutting down), ``Overloaded``, ``DeadlineExceeded``, ``EngineFailed``..."""
        if self._draining:
            raise NotReady(describe("the server is shutting down", fix="retry on another replica"))
        slot = self._slot(request.model)
        config = self.config
        schedule = plan_schedule(
            request.priority,
            request.timeout_us,
            levels=config.priority_levels,
            default_level=config.default_priority_level,
            remaining_s=request.remaining_s,
        )
        self._in_flight += 1
        try:
            result = await slot.infer(
                request.inputs,
                priority=schedule.priority,
                timeout_s=schedule.timeout_s,
                version=request.version,
            )
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()
        outputs = _select(result, request.outputs)
        self._record(request, slot, result)
        return InferResponse(request.model, result.version, request.id, outputs)

    def _record(self, request: InferRequest, slot: ModelSlot, result: InferResult) -> None:
        rows = 1
        if slot.config.batching.max_batch_size > 1:
            rows = int(next(iter(request.inputs.values())).shape[0])
        try:
            self.meter.record(usage_event(request.tenant, result, rows, time.time()))
        except Exception:
            log.exception("metering failed to record a request of %s", request.model)

    # -- repository and admin ---------------------------------------------------------------

    def repository_index(self, *, ready_only: bool = False) -> list[JSON]:
        if self.control is not None:
            return [dict(e.to_json()) for e in self.control.index(ready_only=ready_only)]
        entries = [_runtime_index(status) for status in self.runtime.status().models]
        return [dict(e.to_json()) for group in entries for e in group if not ready_only or e.state == "READY"]

    def load_model(self, name: str) -> list[JSON]:
        """Start loading ``name`` from the repository; returns at once."""
        return [dict(e.to_json()) for e in self._control().load(name)]

    def unload_model(self, name: str) -> list[JSON]:
        """Start unloading every version of ``name``; returns at once."""
        return [dict(e.to_json()) for e in self._control().unload(name)]

    def rollback(self, name: str) -> JSON:
        """Make the previous version of ``name`` active again; returns at once."""
        handle = self.runtime.rollback(name)
        return {"model": name, "version": handle.version, "state": handle.state}

    def set_faults(self, name: str, spec: FaultSpec | None, target: str = "primary") -> JSON:
        slot = self.runtime.model(name)
        slot.set_faults(spec, target=target)
        return {"model": name, "target": target, "faults": None if spec is None else dataclasses.asdict(spec)}

    def model_status(self, name: str) -> JSON:
        return dataclasses.asdict(self.runtime.model(name).status())

    def apply(self, call: AdminCall) -> JSON | list[JSON]:
        """Apply one repository/admin call to this process only (never forwarded: this is how a
        worker applies the calls other workers send it); a ``stats`` call changes nothing and
        returns this process's statistics."""
        if call.op == "load":
            return self.load_model(call.model)
        if call.op == "unload":
            return self.unload_model(call.model)
        if call.op == "rollback":
            return self.rollback(call.model)
        if call.op == "stats":
            return self.own_statistics(call.model or None)
        return self.set_faults(call.model, call.faults, call.target)

    async def admin(self, call: AdminCall) -> JSON | list[JSON]:
        """Apply ``call`` here, then, for a worker of ``kiln serve --workers N`` (``fanout``), on every
        other worker (see :mod:`kiln.server.workers_admin`); ``WorkersDiverged`` when some did not
        apply it. A call refused here goes nowhere else."""
        result = self.apply(call)
        if self.fanout is not None:
            await self.fanout.forward(call)
        return result

    # -- helpers ----------------------------------------------------------------------------

    def _control(self) -> ModelControl:
        if self.control is None:
            raise Unsupported(
                describe("this server has no model repository", fix="start it with a repository")
            )
        return self.control

    def _slot(self, name: str) -> ModelSlot:
        try:
            return self.runtime.model(name)
        except ModelNotFound:
            if self.control is None:
                raise
            entries = [e for e in self.control.index() if e.name == name]
            if not entries:
                raise
            states = ", ".join(
                f"version {e.version} {e.state}{': ' + e.reason if e.reason else ''}" for e in entries
            )
            raise NotReady(
                describe(f"model {name!r} is not serving yet", seen=states, fix="wait until READY")
            ) from None

    def _serving_status(self, name: str, version: str | None) -> ModelStatus:
        status = self._slot(name).status()
        if status.active_version is None:
            raise NotReady(
                describe(f"model {name!r} has no version serving", fix="load one and wait until READY")
            )
        if version is not None and version not in model_info.ready_versions(status):
            loading = (VersionState.LOADING, VersionState.WARMING)
            if any(v.version == version and v.state in loading for v in status.versions):
                raise NotReady(describe(f"version {version!r} of {name!r} is still loading", fix="retry"))
            raise ModelNotFound(
                describe(
                    f"model {name!r} has no version {version!r}",
                    fix=f"ready versions: {model_info.ready_versions(status)}",
                )
            )
        return status


def usage_event(tenant: str, result: InferResult, rows: int, now_s: float) -> UsageEvent:
    """One served request's usage: its rows, and its share of the batch's compute time
    (the batch's compute time x this request's rows / the batch's rows, padding included)."""
    share = rows / result.batch_rows if result.batch_rows > 0 else 1.0
    return UsageEvent(now_s, tenant, result.model, result.version, rows, result.compute_ns * share / 1e9)


def _select(result: InferResult, wanted: tuple[str, ...] | None) -> tuple[tuple[str, Array], ...]:
    outputs = result.outputs
    if wanted is None:
        return tuple(outputs.items())
    missing = [name for name in wanted if name not in outputs]
    if missing:
        raise InvalidInput(
            describe(
                f"unknown output(s) requested: {missing}", fix=f"the model's outputs are {sorted(outputs)}"
            )
        )
    return tuple((name, outputs[name]) for name in wanted)


def _runtime_index(status: ModelStatus) -> list[IndexEntry]:
    latest: dict[str, IndexEntry] = {}
    for version in status.versions:
        state = {VersionState.READY: "READY", VersionState.FAILED: "FAILED"}.get(version.state)
        if state is None:
            state = (
                "LOADING" if version.state in (VersionState.LOADING, VersionState.WARMING) else "UNAVAILABLE"
            )
        latest[version.version] = IndexEntry(status.name, version.version, state, version.reason or "")  # type: ignore[arg-type]
    return list(latest.values())
