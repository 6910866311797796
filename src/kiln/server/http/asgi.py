"""One buffered HTTP request through an ASGI application, for kiln's HTTP protocol.

kiln's protocol runs inference itself and hands every other request (metadata, health,
statistics, repository, admin, ``/metrics``) to the ASGI app, whole: the body has been read (within
the size limit) before the app starts, and the app's reply is collected and written at once. That
covers every route kiln serves (none streams); a reply the app leaves unfinished is answered 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp

from kiln.errors import describe
from kiln.server.http.errors import error_body

Message = MutableMapping[str, Any]
log = logging.getLogger("kiln.server")


@dataclass
class AsgiReply:
    """What the app answered: status, headers and the whole body."""

    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


def _failure(what: str) -> AsgiReply:
    message = describe(f"the server failed to answer: {what}", fix="retry; see the server's log")
    return AsgiReply(500, [(b"content-type", b"application/json")], error_body(message))


async def call_app(
    app: ASGIApp, scope: dict[str, Any], body: bytes, disconnected: asyncio.Event
) -> AsgiReply:
    """Run ``app`` on one request; its reply, or a 500 reply when it raised or sent no whole reply.
    ``disconnected`` is set when the client went away (the app sees ``http.disconnect``)."""
    reply = AsgiReply()
    chunks: list[bytes] = []
    state = {"sent_body": False, "started": False, "done": False}

    async def receive() -> Message:
        if not state["sent_body"]:
            state["sent_body"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not state["started"]:
            state["started"] = True
            reply.status = int(message["status"])
            reply.headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
        elif kind == "http.response.body" and state["started"] and not state["done"]:
            chunks.append(bytes(message.get("body", b"")))
            state["done"] = not message.get("more_body", False)

    try:
        await app(scope, receive, send)
    except Exception as exc:  # the app's own fault; the protocol answers 500
        log.exception("the HTTP app failed on %s %s", scope.get("method"), scope.get("path"))
        if not state["done"]:
            return _failure(type(exc).__name__)
    if not state["done"]:
        return _failure("the application sent no complete response")
    reply.body = b"".join(chunks)
    return reply
