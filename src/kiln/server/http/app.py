"""The KServe v2 REST application: inference on a raw ASGI fast path, everything else on Starlette.

Routes (``{v}`` optional everywhere a model is named: ``/v2/models/{m}/versions/{v}/...``)::

    GET  /v2                                   server metadata
    GET  /v2/health/live | /v2/health/ready    200 when live/ready, else 400
    GET  /v2/models/{m}                        model metadata
    GET  /v2/models/{m}/ready                  200 when the model serves, else 400
    GET  /v2/models/{m}/config                 Triton-style model configuration
    GET  /v2/models/{m}/stats, /v2/models/stats   Triton-style statistics (of every worker)
    POST /v2/models/{m}/infer                  inference (JSON or binary tensors)
    POST /v2/models/{m}/feedback               feedback events, acknowledged once durable
    POST /v2/repository/index                  repository index
    POST /v2/repository/models/{m}/load|unload start loading / unloading (admin)
    POST /v2/admin/models/{m}/rollback         make the previous version active again (admin)
    POST|DELETE /v2/admin/models/{m}/faults    inject / clear engine faults (admin)
    GET  /v2/admin/models/{m}/status           versions, states, routes (admin)
    GET  /metrics                              the metrics app given to :func:`create_app`
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from kiln.errors import InvalidInput, ModelNotFound, describe
from kiln.runtime import FaultSpec
from kiln.server.admin_calls import AdminCall
from kiln.server.auth import API_KEY_HEADER, AUTHORIZATION_HEADER, Authenticator, credential_from
from kiln.server.core import ServerCore, Unsupported
from kiln.server.feedback import FeedbackIntake
from kiln.server.http.errors import error_body, error_reply
from kiln.server.http.feedback import FeedbackEndpoint
from kiln.server.http.infer import InferEndpoint, InferSteps, Receive, Scope, Send, is_infer_path
from kiln.server.workers_stats import StatisticsReply

Handler = Callable[[Request], Awaitable[Response]]


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _stats(reply: StatisticsReply) -> Response:
    """Statistics, with ``--workers N``'s ``kiln-worker``/``kiln-workers-missing`` headers."""
    return Response(orjson.dumps(reply.body), 200, dict(reply.headers()), media_type="application/json")


class FaultsBody(BaseModel):
    """Body of ``POST /v2/admin/models/{m}/faults``: a ``FaultSpec`` and where to apply it."""

    model_config = ConfigDict(extra="forbid")

    target: Literal["primary", "fallback"] = "primary"
    fail_next: int = Field(default=0, ge=0)
    fail_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    delay_ms: float = Field(default=0.0, ge=0.0)
    kill_next: int = Field(default=0, ge=0)
    dead_next: int = Field(default=0, ge=0)
    seed: int = 0


class _Endpoints:
    def __init__(self, core: ServerCore, auth: Authenticator) -> None:
        self.core = core
        self.auth = auth

    def _tenant(self, request: Request) -> str:
        headers = request.headers
        return self.auth.tenant(
            credential_from(headers.get(API_KEY_HEADER), headers.get(AUTHORIZATION_HEADER))
        )

    def _admin(self, request: Request) -> None:
        headers = request.headers
        self.auth.check_admin(credential_from(headers.get(API_KEY_HEADER), headers.get(AUTHORIZATION_HEADER)))

    @staticmethod
    def _model(request: Request) -> tuple[str, str | None]:
        params = request.path_params
        return params["model"], params.get("version")

    async def server_metadata(self, request: Request) -> Response:
        self._tenant(request)
        return _json(self.core.server_metadata())

    async def live(self, request: Request) -> Response:
        live = self.core.is_live()
        return _json({"live": live}, 200 if live else 400)

    async def ready(self, request: Request) -> Response:
        readiness = self.core.readiness()
        body: dict[str, object] = {"ready": readiness.ready}
        if not readiness.ready:
            body["reason"] = readiness.reason
        return _json(body, 200 if readiness.ready else 400)

    async def model_metadata(self, request: Request) -> Response:
        self._tenant(request)
        return _json(self.core.model_metadata(*self._model(request)))

    async def model_ready(self, request: Request) -> Response:
        self._tenant(request)
        model, version = self._model(request)
        try:
            ready = self.core.model_ready(model, version)
        except ModelNotFound as error:
            return Response(error_body(str(error)), 400, media_type="application/json")
        return _json({"name": model, "ready": ready}, 200 if ready else 400)

    async def model_config(self, request: Request) -> Response:
        self._tenant(request)
        return _json(self.core.model_config(*self._model(request)))

    async def model_stats(self, request: Request) -> Response:
        self._tenant(request)
        return _stats(await self.core.statistics(*self._model(request)))

    async def all_stats(self, request: Request) -> Response:
        self._tenant(request)
        return _stats(await self.core.statistics())

    async def repository_index(self, request: Request) -> Response:
        self._tenant(request)
        body = await _body_object(request)
        return _json(self.core.repository_index(ready_only=body.get("ready") is True))

    async def load(self, request: Request) -> Response:
        self._admin(request)
        parameters = (await _body_object(request)).get("parameters")
        if parameters:
            raise Unsupported(
                describe(
                    "load parameters (config override, files) are not supported", seen=str(parameters)[:200]
                )
            )
        return _json(await self.core.admin(AdminCall("load", request.path_params["model"])))

    async def unload(self, request: Request) -> Response:
        self._admin(request)
        await _body_object(request)
        return _json(await self.core.admin(AdminCall("unload", request.path_params["model"])))

    async def rollback(self, request: Request) -> Response:
        self._admin(request)
        return _json(await self.core.admin(AdminCall("rollback", request.path_params["model"])))

    async def set_faults(self, request: Request) -> Response:
        self._admin(request)
        try:
            body = FaultsBody.model_validate(await _body_object(request))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(describe(f"invalid faults: {problems}")) from None
        spec = FaultSpec(**body.model_dump(exclude={"target"}))
        call = AdminCall("faults", request.path_params["model"], spec, body.target)
        return _json(await self.core.admin(call))

    async def clear_faults(self, request: Request) -> Response:
        self._admin(request)
        target = request.query_params.get("target", "primary")
        return _json(await self.core.admin(AdminCall("faults", request.path_params["model"], None, target)))

    async def model_status(self, request: Request) -> Response:
        self._admin(request)
        return _json(self.core.model_status(request.path_params["model"]))


async def _body_object(request: Request) -> dict[str, object]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(describe("the request body is not valid JSON", seen=str(exc))) from None
    if not isinstance(data, dict):
        raise InvalidInput(describe("the request body must be a JSON object", seen=type(data).__name__))
    return data


async def _not_found(request: Request, exc: Exception) -> Response:
    message = describe(
        "no such endpoint",
        seen=f"{request.method} {request.url.path}",
        fix="see GET /v2 and the KServe v2 routes",
    )
    return Response(error_body(message), 404, media_type="application/json")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    message = describe("method not allowed here", seen=f"{request.method} {request.url.path}")
    return Response(error_body(message), 405, media_type="application/json")


def _guarded(handler: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as error:
            status, body = error_reply(error)
            return Response(body, status, media_type="application/json")

    return endpoint


def _model_routes(suffix: str, handler: Handler, methods: list[str]) -> list[BaseRoute]:
    guarded = _guarded(handler)
    return [
        Route(f"/v2/models/{{model}}{suffix}", guarded, methods=methods),
        Route(f"/v2/models/{{model}}/versions/{{version}}{suffix}", guarded, methods=methods),
    ]


def _routes(e: _Endpoints, feedback: FeedbackIntake | None = None) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/v2", _guarded(e.server_metadata), methods=["GET"]),
        Route("/v2/health/live", _guarded(e.live), methods=["GET"]),
        Route("/v2/health/ready", _guarded(e.ready), methods=["GET"]),
        Route("/v2/models/stats", _guarded(e.all_stats), methods=["GET"]),
        Route("/v2/repository/index", _guarded(e.repository_index), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", _guarded(e.load), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", _guarded(e.unload), methods=["POST"]),
        Route("/v2/admin/models/{model}/rollback", _guarded(e.rollback), methods=["POST"]),
        Route("/v2/admin/models/{model}/faults", _guarded(e.set_faults), methods=["POST"]),
        Route("/v2/admin/models/{model}/faults", _guarded(e.clear_faults), methods=["DELETE"]),
        Route("/v2/admin/models/{model}/status", _guarded(e.model_status), methods=["GET"]),
    ]
    routes += _model_routes("", e.model_metadata, ["GET"])
    routes += _model_routes("/ready", e.model_ready, ["GET"])
    routes += _model_routes("/config", e.model_config, ["GET"])
    routes += _model_routes("/stats", e.model_stats, ["GET"])
    routes += _model_routes("/feedback", FeedbackEndpoint(feedback, e._tenant), ["POST"])
    return routes


class KServeApp:
    """The ASGI application: ``POST .../infer`` straight to :class:`InferEndpoint`, ``/metrics`` to
    the metrics app, the rest routed by Starlette. ``steps`` are the inference steps, for a server
    that runs inference requests itself (kiln's HTTP protocol)."""

    def __init__(
        self,
        core: ServerCore,
        auth: Authenticator,
        *,
        max_request_bytes: int,
        metrics_app: ASGIApp | None,
        feedback: FeedbackIntake | None = None,
    ) -> None:
        self.steps = InferSteps(core, auth, max_request_bytes=max_request_bytes)
        self.infer = InferEndpoint(self.steps)
        self.metrics = metrics_app
        handlers = {404: _not_found, 405: _not_allowed}
        self.router = Starlette(routes=_routes(_Endpoints(core, auth), feedback), exception_handlers=handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if is_infer_path(scope):
                await self.infer(scope, receive, send)
                return
            if scope["path"] == "/metrics" and self.metrics is not None:
                await self.metrics(scope, receive, send)
                return
        await self.router(scope, receive, send)


def create_app(
    core: ServerCore,
    auth: Authenticator | None = None,
    *,
    metrics_app: ASGIApp | None = None,
    feedback: FeedbackIntake | None = None,
) -> KServeApp:
    """The KServe v2 REST app over ``core``; ``metrics_app`` (e.g. Prometheus') is mounted on
    ``/metrics``; ``feedback`` takes ``POST .../feedback`` (501 without it)."""
    return KServeApp(
        core,
        auth or Authenticator(),
        max_request_bytes=core.config.max_request_bytes,
        metrics_app=metrics_app,
        feedback=feedback,
    )
