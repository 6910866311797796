"""The gRPC ``kiln.feedback.FeedbackService`` (``feedback.proto``): the same intake as HTTP."""

from __future__ import annotations

from typing import Any

from kiln.server.auth import API_KEY_HEADER, AUTHORIZATION_HEADER, Authenticator, credential_from
from kiln.server.core import Unsupported
from kiln.server.feedback import FeedbackIntake
from kiln.server.grpc._generated import feedback_pb2 as pb
from kiln.server.grpc.errors import grpc_error

Message = Any
Context = Any


def request_body(request: Message) -> dict[str, object]:
    """A ``FeedbackRequest``'s events as the JSON body the HTTP route takes (one parser checks both)."""
    events: list[dict[str, object]] = []
    for event in request.events:
        item: dict[str, object] = {}
        if event.request_id:
            item["request_id"] = event.request_id
        item["label"] = event.label if event.HasField("label") else None
        if event.HasField("timestamp"):
            item["timestamp"] = event.timestamp
        if event.features:
            item["features"] = {name: list(values.values) for name, values in event.features.items()}
        events.append(item)
    return {"events": events}


class FeedbackService:
    """The servicer; authenticates like inference (an API key when the server has keys)."""

    def __init__(self, intake: FeedbackIntake | None, auth: Authenticator) -> None:
        self.intake = intake
        self.auth = auth

    def _authenticate(self, context: Context) -> None:
        if self.auth.is_open:
            return
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        self.auth.tenant(credential_from(metadata.get(API_KEY_HEADER), metadata.get(AUTHORIZATION_HEADER)))

    async def SendFeedback(self, request: Message, context: Context) -> Message:  # noqa: N802 (RPC name)
        try:
            self._authenticate(context)
            if self.intake is None:
                raise Unsupported(
                    "this server collects no feedback; start it with a feedback store (--feedback)"
                )
            reply = await self.intake.submit(request.model_name, request_body(request))
            return pb.FeedbackResponse(
                accepted=reply["accepted"],
                first_offset=reply["first_offset"],
                last_offset=reply["last_offset"],
            )
        except Exception as error:
            code, message = grpc_error(error)
            await context.abort(code, message)
            raise
