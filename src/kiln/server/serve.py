"""Starting and stopping kiln's server: KServe v2 over HTTP (kiln's httptools protocol on uvloop) and gRPC
(``grpc.aio``), on one event loop, in front of one :class:`~kiln.runtime.Runtime`.

* :func:`start_server` starts both front ends on the running loop and returns a
  :class:`RunningServer` (its real ports, even when asked for port 0).
* :func:`serve` runs until SIGTERM or SIGINT, then shuts down gracefully: new inference is refused
  (503 / UNAVAILABLE) and readiness turns false, in-flight requests finish (up to
  ``drain_timeout_s``), then gRPC and HTTP close.
* :class:`BackgroundServer` runs a server on a thread of its own (tests, notebooks, examples).
* :func:`create_repository` is the one place the model repository is plugged in (``kiln serve REPO``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from grpc import aio
from starlette.types import ASGIApp

from kiln.errors import ConfigError, describe
from kiln.feedback import FeedbackStore
from kiln.metering.usage import Meter
from kiln.repository.control import ModelControl, RepositoryService
from kiln.repository.layout import STATE_DIR
from kiln.runtime import Runtime
from kiln.server.admin_calls import Forwarder
from kiln.server.auth import Authenticator, create_authenticator
from kiln.server.config import ServerConfig
from kiln.server.core import ServerCore, Unsupported
from kiln.server.feedback import FeedbackIntake
from kiln.server.http.app import create_app
from kiln.server.http.errors import http_status
from kiln.server.http.server import HttpServer
from kiln.server.listeners import STARTUP_TIMEOUT_S, client_host, start_grpc, start_http
from kiln.server.messages import client_message
from kiln.server.workers_admin import AdminFanout, answer_admin_calls

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from kiln.online.loop import OnlineGateConfig, OnlineHooks
    from kiln.server.metrics import ServerMetrics
    from kiln.server.metrics_workers import WorkerPeers

log = logging.getLogger("kiln.server")
T = TypeVar("T")
GRPC_CLOSE_GRACE_S = 5.0


def default_metrics_app() -> ASGIApp:
    """Prometheus' exposition of the process's default registry (where kiln's metrics register)."""
    from prometheus_client import make_asgi_app  # noqa: PLC0415 (only when no metrics app is given)

    app: ASGIApp = make_asgi_app()
    return app


@dataclass
class RunningServer:
    """A started server. ``shutdown()`` drains and closes it."""

    core: ServerCore
    host: str
    http_port: int
    grpc_port: int | None
    _http: HttpServer
    _grpc: aio.Server | None
    feedback: FeedbackIntake | None = None

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP server, as tritonclient.http takes it."""
        return f"{client_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str | None:
        return None if self.grpc_port is None else f"{client_host(self.host)}:{self.grpc_port}"

    async def shutdown(self, drain_timeout_s: float | None = None) -> bool:
        """Refuse new inference, wait for in-flight requests, close gRPC and HTTP.
        True when every in-flight request finished before the timeout."""
        self.core.begin_drain()
        timeout = self.core.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        drained = await self.core.wait_drained(timeout)
        if not drained:
            log.warning("shutting down with %d request(s) still in flight", self.core.in_flight)
        if self._grpc is not None:
            await self._grpc.stop(GRPC_CLOSE_GRACE_S)
        await self._http.close(timeout + 1.0)
        if self.feedback is not None:
            self.feedback.close()
        return drained


async def start_server(
    runtime: Runtime,
    control: ModelControl | None = None,
    config: ServerConfig | None = None,
    *,
    meter: Meter | None = None,
    metrics_app: ASGIApp | None = None,
    auth: Authenticator | None = None,
    feedback: FeedbackStore | None = None,
    fanout: Forwarder | None = None,
) -> RunningServer:
    """Start HTTP and gRPC on the running loop, in front of ``runtime``.

    ``control`` backs the repository endpoints and readiness; ``meter`` gets one ``UsageEvent``
    per served request; ``metrics_app`` answers ``/metrics`` (default: Prometheus' default
    registry); ``auth`` defaults to the keys file and admin token of ``config``; ``feedback``
    takes ``POST /v2/models/{m}/feedback`` and the gRPC feedback service (the caller closes it);
    ``fanout`` sends the repository/admin calls this server applies on to the other workers of
    ``kiln serve --workers N`` (see :mod:`kiln.server.workers_admin`).
    """
    config = config or ServerConfig()
    auth = auth or create_authenticator(config.api_keys_file, config.admin_token)
    core = ServerCore(runtime, control, config=config, meter=meter, fanout=fanout)
    intake = FeedbackIntake(feedback) if feedback is not None else None
    app = create_app(
        core,
        auth,
        metrics_app=metrics_app if metrics_app is not None else default_metrics_app(),
        feedback=intake,
    )
    grpc_server, grpc_port = await start_grpc(core, auth, config, intake)
    try:
        http = await start_http(app, config)
    except BaseException:
        if grpc_server is not None:
            await grpc_server.stop(None)
        raise
    core.mark_started()
    log.info("kiln serving HTTP on %s:%d, gRPC on %s", config.host, http.port, grpc_port)
    return RunningServer(core, config.host, http.port, grpc_port, http, grpc_server, intake)


async def serve(
    runtime: Runtime,
    control: ModelControl | None = None,
    config: ServerConfig | None = None,
    *,
    meter: Meter | None = None,
    metrics_app: ASGIApp | None = None,
    auth: Authenticator | None = None,
    on_started: Callable[[RunningServer], None] | None = None,
    feedback: FeedbackStore | None = None,
    listen_when_ready: bool = False,
    fanout: AdminFanout | None = None,
) -> bool:
    """Serve until SIGTERM or SIGINT, then drain and close (see :meth:`RunningServer.shutdown`).
    Returns whether every in-flight request finished. The runtime is left open for the caller.

    ``listen_when_ready``: listen only once every model that should be served is ready (a worker
    of ``kiln serve --workers N`` joins the shared ports then, so that it never takes connections
    it would answer with 503); a signal while waiting returns True at once.

    ``fanout``: this server is one worker of ``kiln serve --workers N``: the repository/admin
    calls it takes are applied by every worker, and from before ``on_started`` until it has
    drained it applies those the other workers send it (:mod:`kiln.server.workers_admin`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if listen_when_ready and not await _ready_unless_stopped(runtime, control, config, stop):
            return True
        running = await start_server(
            runtime,
            control,
            config,
            meter=meter,
            metrics_app=metrics_app,
            auth=auth,
            feedback=feedback,
            fanout=fanout,
        )
        async with _peer_admin_calls(fanout, running.core):
            if on_started is not None:
                on_started(running)
            await stop.wait()
            log.info("signal received: draining %d in-flight request(s)", running.core.in_flight)
            return await running.shutdown()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def _peer_admin_calls(fanout: AdminFanout | None, core: ServerCore) -> AsyncIterator[None]:
    """For a worker (``fanout``): apply the calls the other workers send, here only (``core.apply``
    never forwards, so a call never goes round)."""
    if fanout is None:
        yield
        return
    async with answer_admin_calls(fanout.own_socket, core.apply, _peer_reply):
        yield


def _peer_reply(error: BaseException) -> tuple[int, str]:
    return http_status(error), client_message(error)


READY_POLL_S = 0.05


async def _ready_unless_stopped(
    runtime: Runtime, control: ModelControl | None, config: ServerConfig | None, stop: asyncio.Event
) -> bool:
    """Wait until the models are ready as a started server would report them; False on ``stop``."""
    probe = ServerCore(runtime, control, config=config)
    probe.mark_started()
    while not probe.is_ready():
        try:
            await asyncio.wait_for(stop.wait(), READY_POLL_S)
        except TimeoutError:
            continue
        return False
    return not stop.is_set()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop (what the server is tuned for), else asyncio's."""
    try:
        import uvloop  # noqa: PLC0415 (optional speed-up)
    except ImportError:  # pragma: no cover - uvloop is a dependency (uvicorn[standard])
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class BackgroundServer:
    """A server on a thread with its own event loop, for tests, notebooks and examples::

        with BackgroundServer(runtime, config=ServerConfig(http_port=0, grpc_port=0)) as server:
            client = tritonclient.http.InferenceServerClient(server.http_url)

    Leaving the block drains and closes the server, and the runtime too with ``close_runtime``
    (its batchers live on the server's loop, which stops with the server). Use :meth:`call`
    to run coroutines (e.g. ``runtime.load_version(...).wait()``) on the server's loop.
    """

    def __init__(
        self,
        runtime: Runtime,
        control: ModelControl | None = None,
        config: ServerConfig | None = None,
        *,
        meter: Meter | None = None,
        metrics_app: ASGIApp | None = None,
        auth: Authenticator | None = None,
        close_runtime: bool = False,
        feedback: FeedbackStore | None = None,
    ) -> None:
        self._args = (runtime, control, config)
        self._runtime = runtime
        self._close_runtime = close_runtime
        self._kwargs: dict[str, Any] = {
            "meter": meter,
            "metrics_app": metrics_app,
            "auth": auth,
            "feedback": feedback,
        }
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kiln-server", daemon=True)
        self._running: RunningServer | None = None

    @property
    def server(self) -> RunningServer:
        if self._running is None:
            raise RuntimeError("the server is not running; use BackgroundServer as a context manager")
        return self._running

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def grpc_url(self) -> str | None:
        return self.server.grpc_url

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def start(self) -> BackgroundServer:
        self._thread.start()
        try:
            self._running = self.call(start_server(*self._args, **self._kwargs), STARTUP_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise
        return self

    def stop(self, drain_timeout_s: float | None = None) -> bool:
        """Drain and close the server, then stop its thread. True when fully drained."""
        drained = True
        if self._running is not None:
            drained = self.call(self._running.shutdown(drain_timeout_s))
            self._running = None
            if self._close_runtime:
                self.call(self._runtime.aclose())
        self._stop_loop()
        return drained

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self.call(_cancel_leftovers())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _cancel_leftovers() -> None:
    """Cancel what still runs on the loop (batchers, probes) and wait for it, as asyncio.run does."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def create_repository(path: Path, runtime: Runtime, **options: object) -> ModelControl:
    """The model repository at ``path``, driving ``runtime``: ``kiln.repository.create_repository``.

    ``ConfigError`` when ``path`` is not a folder; ``Unsupported`` while kiln is installed without
    the repository's factory.
    """
    if not path.is_dir():
        raise ConfigError(
            describe("the model repository is not a folder", seen=str(path), fix="give a folder")
        )
    module = importlib.import_module("kiln.repository")
    factory = getattr(module, "create_repository", None)
    if factory is None:
        raise Unsupported(
            describe(
                "this kiln has no model repository yet (kiln.repository.create_repository is missing)",
                seen=str(path),
                fix="serve models from Python with kiln.server.serve.serve(runtime, control) meanwhile",
            )
        )
    control: ModelControl = factory(path, runtime, **options)
    return control


def serve_repository(
    path: Path,
    config: ServerConfig,
    *,
    meter: Meter | None = None,
    ledger: Path | None = None,
    repository: Mapping[str, Any] | None = None,
    on_started: Callable[[RunningServer], None] | None = None,
    worker: int | None = None,
    peers: WorkerPeers | None = None,
    feedback: Path | None = None,
    online: OnlineGateConfig | None = None,
) -> bool:
    """``kiln serve REPO``: a runtime, the repository at ``path`` driving it, metrics and metering,
    and :func:`serve` on uvloop until SIGTERM/SIGINT. Returns whether every in-flight request finished.

    The server listens at once and reports ready when every model with a complete version serves
    one (the repository shows the others LOADING until then). ``meter`` defaults to
    :class:`~kiln.metering.Metering` into ``ledger`` (default ``REPO/.kiln/usage.sqlite``), whose
    EPU use each loaded engine's efficiency factor. ``repository`` holds
    :class:`~kiln.repository.RepositoryOptions` fields (``poll_interval_s``, ``cache_dir``...).
    ``/metrics`` serves :class:`~kiln.server.metrics.ServerMetrics` (runtime, builds and loads,
    metered usage, GPU, process).

    ``worker``/``peers``: this process is worker ``worker`` of ``kiln serve --workers N``; with
    ``peers`` it serves its own metrics on a Unix socket in ``peers.folder``, and its ``/metrics``
    answers for every worker (``kiln.server.metrics_workers``); the repository/admin calls it takes
    are applied by every worker, through another Unix socket there (``kiln.server.workers_admin``).

    ``feedback`` (a SQLite file) turns on the online loop: the feedback endpoints append to that
    store, and every new version passes the serving gate (``online``: holdout AUC, finite outputs)
    before it is built, with its journal and ``kiln_online_*`` metrics (see ``docs/online.md``).
    """
    from prometheus_client.registry import Collector  # noqa: PLC0415

    from kiln.metering import EfficiencyTable, Metering  # noqa: PLC0415
    from kiln.server.metrics import ServerMetrics  # noqa: PLC0415
    from kiln.server.metrics_repository import RepositoryCollector  # noqa: PLC0415

    if not path.is_dir():
        raise ConfigError(
            describe("the model repository is not a folder", seen=str(path), fix="give a folder")
        )

    async def main() -> bool:
        efficiency = EfficiencyTable()
        metering: Metering | None = None
        used: Meter
        if meter is None:
            metering = Metering.open(ledger or default_ledger(path), efficiency_of=efficiency)
            used = metering
        else:
            used = meter
        runtime = Runtime()
        label = None if worker is None else str(worker)
        metrics = ServerMetrics(runtime, usage=metering, gpu="auto", worker=label)
        store = FeedbackStore(feedback) if feedback is not None else None
        gate_store = FeedbackStore(feedback) if feedback is not None else None
        settings = dict(repository or {})
        if gate_store is not None:
            settings["hooks"] = _online_hooks(path, gate_store, online, metrics.registry)
        own_socket: asyncio.AbstractServer | None = None
        try:
            control = create_repository(
                path, runtime, metrics=metrics.builds, efficiency=efficiency, **settings
            )
            metrics.register(cast(Collector, RepositoryCollector(control)))
            metrics_app, own_socket = await _metrics_app(metrics, worker, peers)
            if isinstance(control, RepositoryService):
                await control.start()
            try:
                return await serve(
                    runtime,
                    control,
                    config,
                    meter=used,
                    metrics_app=metrics_app,
                    on_started=on_started,
                    listen_when_ready=worker is not None,
                    feedback=store,
                    fanout=_fanout(worker, peers),
                )
            finally:
                if isinstance(control, RepositoryService):
                    await control.aclose()
        finally:
            if own_socket is not None:
                own_socket.close()
            await runtime.aclose()
            if metering is not None:
                metering.close()
            for opened in (store, gate_store):
                if opened is not None:
                    opened.close()

    loop = new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


async def _metrics_app(
    metrics: ServerMetrics, worker: int | None, peers: WorkerPeers | None
) -> tuple[Any, asyncio.AbstractServer | None]:
    """``/metrics``'s app: this process's metrics, or, for a worker with ``peers``, every worker's
    (then also the Unix socket serving this worker's own metrics to the others)."""
    from kiln.server.metrics import create_metrics_app  # noqa: PLC0415
    from kiln.server.metrics_workers import (  # noqa: PLC0415
        create_workers_metrics_app,
        serve_own_metrics,
        socket_path,
    )

    if peers is None or worker is None:
        return create_metrics_app(metrics), None
    own = await serve_own_metrics(socket_path(peers.folder, worker), metrics.text)
    return create_workers_metrics_app(peers.folder, worker, peers.num_workers, metrics.text), own


def _fanout(worker: int | None, peers: WorkerPeers | None) -> AdminFanout | None:
    return None if worker is None or peers is None else AdminFanout(peers.folder, worker, peers.num_workers)


def _online_hooks(
    repo: Path, store: FeedbackStore, config: OnlineGateConfig | None, registry: CollectorRegistry
) -> OnlineHooks:
    from kiln.online.loop import OnlineHooks  # noqa: PLC0415
    from kiln.online.metrics import ServingLoopMetrics  # noqa: PLC0415

    return OnlineHooks(repo, store, config, metrics=ServingLoopMetrics(registry))


def default_ledger(repository: Path) -> Path:
    """Where ``kiln serve`` meters usage by default: ``REPO/.kiln/usage.sqlite`` (the repository
    scan ignores hidden folders)."""
    return repository / STATE_DIR / "usage.sqlite"
