"""The KServe v2 gRPC service (``inference.GRPCInferenceService``) on ``grpc.aio``.

Each RPC authenticates from the call's metadata (``x-api-key`` or ``authorization: Bearer``),
calls :class:`~kiln.server.core.ServerCore`, and turns kiln's errors into status codes
(:mod:`kiln.server.grpc.errors`). Messages above ``grpc_max_message_bytes`` are refused by gRPC
itself with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from grpc import aio

from kiln.errors import ModelNotFound
from kiln.server.admin_calls import AdminCall
from kiln.server.auth import API_KEY_HEADER, AUTHORIZATION_HEADER, Authenticator, credential_from
from kiln.server.core import ServerCore
from kiln.server.feedback import FeedbackIntake
from kiln.server.grpc import codec
from kiln.server.grpc._generated import kserve_pb2 as pb
from kiln.server.grpc._generated import kserve_pb2_grpc as pb_grpc
from kiln.server.grpc.errors import grpc_error

Message = Any
Context: TypeAlias = Any
"""``grpc.aio.ServicerContext`` (grpc ships no type information)."""
T = TypeVar("T")


async def _abort(context: Context, error: Exception) -> None:
    code, message = grpc_error(error)
    await context.abort(code, message)


class InferenceService:
    """The servicer: one method per RPC, as the generated ``add_..._to_server`` expects."""

    def __init__(self, core: ServerCore, auth: Authenticator) -> None:
        self.core = core
        self.auth = auth

    def _credential(self, context: Context) -> str | None:
        api_key = authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == API_KEY_HEADER:
                api_key = str(value)
            elif key == AUTHORIZATION_HEADER:
                authorization = str(value)
        return credential_from(api_key, authorization)

    def _tenant(self, context: Context) -> str:
        if self.auth.is_open:
            return self.auth.tenant(None)
        return self.auth.tenant(self._credential(context))

    async def _call(self, context: Context, work: Callable[[], T], *, admin: bool = False) -> T:
        """Authenticate (the admin token when ``admin``), run ``work``, map errors to codes."""
        try:
            if admin:
                self.auth.check_admin(self._credential(context))
            else:
                self._tenant(context)
            return work()
        except Exception as error:
            await _abort(context, error)
            raise  # unreachable: abort raises

    async def ServerLive(self, request: Message, context: Context) -> Message:  # noqa: N802 (RPC name)
        return pb.ServerLiveResponse(live=self.core.is_live())

    async def ServerReady(self, request: Message, context: Context) -> Message:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.core.is_ready())

    async def ModelReady(self, request: Message, context: Context) -> Message:  # noqa: N802
        def ready() -> Message:
            try:
                return pb.ModelReadyResponse(
                    ready=self.core.model_ready(request.name, request.version or None)
                )
            except ModelNotFound:
                return pb.ModelReadyResponse(ready=False)

        return await self._call(context, ready)

    async def ServerMetadata(self, request: Message, context: Context) -> Message:  # noqa: N802
        return await self._call(
            context, lambda: codec.from_json(self.core.server_metadata(), pb.ServerMetadataResponse())
        )

    async def ModelMetadata(self, request: Message, context: Context) -> Message:  # noqa: N802
        return await self._call(
            context,
            lambda: codec.from_json(
                self.core.model_metadata(request.name, request.version or None), pb.ModelMetadataResponse()
            ),
        )

    async def ModelConfig(self, request: Message, context: Context) -> Message:  # noqa: N802
        def config() -> Message:
            reply = pb.ModelConfigResponse()
            codec.from_json(self.core.model_config(request.name, request.version or None), reply.config)
            return reply

        return await self._call(context, config)

    async def ModelStatistics(self, request: Message, context: Context) -> Message:  # noqa: N802
        """Statistics of every worker; ``kiln-worker``/``kiln-workers-missing`` in the trailing
        metadata with ``--workers N`` (see :mod:`kiln.server.workers_stats`)."""
        try:
            self._tenant(context)
            reply = await self.core.statistics(request.name or None, request.version or None)
        except Exception as error:
            await _abort(context, error)
            raise  # unreachable: abort raises
        if headers := reply.headers():
            context.set_trailing_metadata(tuple(headers))
        return codec.from_json(reply.body, pb.ModelStatisticsResponse())

    async def ModelInfer(self, request: Message, context: Context) -> Message:  # noqa: N802
        try:
            tenant = self._tenant(context)
            decoded = codec.decode_request(request, tenant=tenant, remaining_s=context.time_remaining())
            return codec.encode_response(await self.core.infer(decoded))
        except Exception as error:
            await _abort(context, error)
            raise

    async def RepositoryIndex(self, request: Message, context: Context) -> Message:  # noqa: N802
        def index() -> Message:
            reply = pb.RepositoryIndexResponse()
            for entry in self.core.repository_index(ready_only=request.ready):
                reply.models.add(**entry)
            return reply

        return await self._call(context, index)

    async def RepositoryModelLoad(self, request: Message, context: Context) -> Message:  # noqa: N802
        await self._admin_call(context, AdminCall("load", request.model_name))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Message, context: Context) -> Message:  # noqa: N802
        await self._admin_call(context, AdminCall("unload", request.model_name))
        return pb.RepositoryModelUnloadResponse()

    async def _admin_call(self, context: Context, call: AdminCall) -> None:
        """Check the admin token, then apply ``call`` (on every worker; see ``ServerCore.admin``)."""
        try:
            self.auth.check_admin(self._credential(context))
            await self.core.admin(call)
        except Exception as error:
            await _abort(context, error)


def create_grpc_server(
    core: ServerCore, auth: Authenticator | None = None, *, feedback: FeedbackIntake | None = None
) -> aio.Server:
    """A ``grpc.aio`` server carrying the KServe v2 service and kiln's feedback service (no port
    bound yet; the feedback service answers UNIMPLEMENTED without ``feedback``). With
    ``config.workers > 1`` the port is shared with the other workers (SO_REUSEPORT)."""
    limit = core.config.grpc_max_message_bytes
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1 if core.config.workers > 1 else 0),
        ]
    )
    servicer = InferenceService(core, auth or Authenticator())
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    from kiln.server.grpc._generated import feedback_pb2_grpc  # noqa: PLC0415 (avoids an import cycle)
    from kiln.server.grpc.feedback_service import FeedbackService  # noqa: PLC0415

    feedback_servicer = FeedbackService(feedback, servicer.auth)
    feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(feedback_servicer, server)  # type: ignore[no-untyped-call]
    return server
