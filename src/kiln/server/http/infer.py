"""The inference endpoint as a raw ASGI handler: ``POST /v2/models/{m}[/versions/{v}]/infer``.

This is the hot path, so it skips the router and request objects: one pass over the headers, the
body read with a size limit, decode, run, encode, two ASGI messages. Everything else goes through
Starlette (:mod:`kiln.server.http.app`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kiln.errors import InvalidInput, ModelNotFound, describe
from kiln.server.auth import Authenticator, credential_from
from kiln.server.core import ServerCore, TooLarge
from kiln.server.http.codec import decode_request, encode_response
from kiln.server.http.errors import error_reply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PREFIX = "/v2/models/"
SUFFIX = "/infer"
_JSON = b"application/json"
_BINARY = b"application/octet-stream"


def is_infer_path(scope: Scope) -> bool:
    path: str = scope["path"]
    return scope["method"] == "POST" and path.endswith(SUFFIX) and path.startswith(PREFIX)


def parse_infer_path(path: str) -> tuple[str, str | None]:
    """(model, version) of an infer path; ``ModelNotFound`` when it names neither properly."""
    rest = path[len(PREFIX) : -len(SUFFIX)]
    model, version = rest, None
    if "/versions/" in rest:
        model, version = rest.split("/versions/", 1)
    if not model or "/" in model or (version is not None and (not version or "/" in version)):
        raise ModelNotFound(
            describe(
                "no such inference endpoint", seen=path, fix="POST /v2/models/{model}[/versions/{v}]/infer"
            )
        )
    return model, version


class InferEndpoint:
    """Runs inference requests straight off ASGI messages."""

    def __init__(self, core: ServerCore, auth: Authenticator, *, max_request_bytes: int) -> None:
        self._core = core
        self._auth = auth
        self._max_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            tenant = self._tenant(scope)
            model, version = parse_infer_path(scope["path"])
            body, header_length = await self._read(scope, receive)
            request, plan = decode_request(body, header_length, model=model, version=version, tenant=tenant)
            response = await self._core.infer(request)
            payload, json_length = encode_response(response, plan)
        except Exception as error:
            status, message = error_reply(error)
            await _reply(send, status, message, _JSON, None)
            return
        await _reply(send, 200, payload, _JSON if json_length is None else _BINARY, json_length)

    def _tenant(self, scope: Scope) -> str:
        if self._auth.is_open:
            return self._auth.tenant(None)
        api_key = authorization = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        return self._auth.tenant(credential_from(api_key, authorization))

    async def _read(self, scope: Scope, receive: Receive) -> tuple[bytes, int | None]:
        header_length: int | None = None
        declared = -1
        for name, value in scope["headers"]:
            if name == b"inference-header-content-length":
                header_length = _int_header("Inference-Header-Content-Length", value)
            elif name == b"content-length":
                declared = _int_header("Content-Length", value)
        if declared > self._max_bytes:
            raise self._too_large(declared)
        message = await receive()
        body: bytes = message.get("body", b"")
        if len(body) > self._max_bytes:
            raise self._too_large(len(body))
        if not message.get("more_body", False):
            return body, header_length
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_bytes:
                raise self._too_large(size)
            chunks.append(chunk)
        return b"".join(chunks), header_length

    def _too_large(self, size: int) -> TooLarge:
        return TooLarge(
            describe(
                "the request body is too large",
                seen=f"{size} bytes, limit {self._max_bytes}",
                fix="send smaller batches, or raise the server's max_request_bytes",
            )
        )


def _int_header(name: str, value: bytes) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(describe(f"header {name} is not a number", seen=value.decode("latin-1"))) from None
    if number < 0:
        raise InvalidInput(describe(f"header {name} is negative", seen=number))
    return number


async def _reply(send: Send, status: int, body: bytes, content_type: bytes, json_length: int | None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if json_length is not None:
        headers.append((b"inference-header-content-length", str(json_length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
