"""``POST /v2/models/{m}/feedback``: a JSON batch of feedback events (see ``docs/online.md``)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from kiln.errors import InvalidInput, describe
from kiln.server.core import Unsupported
from kiln.server.feedback import FeedbackIntake


class FeedbackEndpoint:
    """The route's handler; without an intake (a server started with no feedback store) it answers 501."""

    def __init__(self, intake: FeedbackIntake | None, authenticate: Callable[[Request], object]) -> None:
        self.intake = intake
        self.authenticate = authenticate

    async def __call__(self, request: Request) -> Response:
        self.authenticate(request)
        if self.intake is None:
            raise Unsupported(
                describe(
                    "this server collects no feedback", fix="start it with a feedback store (--feedback)"
                )
            )
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(describe("the feedback body is not valid JSON", seen=str(exc))) from None
        reply = await self.intake.submit(request.path_params["model"], body)
        return Response(orjson.dumps(reply), 200, media_type="application/json")
