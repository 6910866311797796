"""The inference endpoint, ``POST /v2/models/{m}[/versions/{v}]/infer``, in three steps that both
HTTP front doors share, so that they give the same answers and the same errors:

* :meth:`InferSteps.admit`: from the path and headers alone, who asks (API key), for which model
  and version, the JSON header's length, and whether the declared body fits the size limit;
* :meth:`InferSteps.check_size`: whether the body read so far still fits;
* :meth:`InferSteps.run`: decode the body, run it, encode the reply (or the error reply).

:class:`InferEndpoint` drives them from ASGI messages (the app's own inference route, used by ASGI
servers and in-process tests); kiln's HTTP protocol (:mod:`kiln.server.http.protocol`) drives them
straight off the parser.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from kiln.errors import InvalidInput, ModelNotFound, describe
from kiln.server.auth import Authenticator, credential_from
from kiln.server.core import ServerCore, TooLarge
from kiln.server.http.codec import encode_response
from kiln.server.http.decode_cache import RequestDecoder
from kiln.server.http.errors import error_reply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Iterable[tuple[bytes, bytes]]

PREFIX = "/v2/models/"
SUFFIX = "/infer"
JSON_TYPE = b"application/json"
BINARY_TYPE = b"application/octet-stream"


def is_infer(method: str, path: str) -> bool:
    """Whether ``method path`` is an inference request (``POST /v2/models/.../infer``)."""
    return method == "POST" and path.endswith(SUFFIX) and path.startswith(PREFIX)


def is_infer_path(scope: Scope) -> bool:
    return is_infer(scope["method"], scope["path"])


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


@dataclass(frozen=True, slots=True)
class Admission:
    """An inference request admitted on its path and headers: body still to come."""

    tenant: str
    model: str
    version: str | None
    header_length: int | None


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP reply to an inference request: status, body, and the JSON header's length when
    binary tensors follow it (``Inference-Header-Content-Length``)."""

    status: int
    body: bytes
    json_length: int | None = None

    @property
    def content_type(self) -> bytes:
        return JSON_TYPE if self.json_length is None else BINARY_TYPE


def error_response(error: BaseException) -> Reply:
    status, body = error_reply(error)
    return Reply(status, body)


class InferSteps:
    """The steps of one inference request; see the module's docstring."""

    def __init__(self, core: ServerCore, auth: Authenticator, *, max_request_bytes: int) -> None:
        self._core = core
        self._auth = auth
        self.max_request_bytes = max_request_bytes
        self._decoder = RequestDecoder()

    def admit(self, path: str, headers: Headers) -> Admission:
        """Check the caller, the path and the size headers. Raises kiln's errors (``Unauthorized``,
        ``ModelNotFound``, ``InvalidInput``, ``TooLarge``), in that order of checks."""
        api_key = authorization = header_raw = declared_raw = None
        for name, value in headers:
            if name == b"inference-header-content-length":
                header_raw = value
            elif name == b"content-length":
                declared_raw = value
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        auth = self._auth
        tenant = auth.tenant(None) if auth.is_open else auth.tenant(credential_from(api_key, authorization))
        model, version = parse_infer_path(path)
        header_length = None
        if header_raw is not None:
            header_length = _int_header("Inference-Header-Content-Length", header_raw)
        if declared_raw is not None:
            self.check_size(_int_header("Content-Length", declared_raw))
        return Admission(tenant, model, version, header_length)

    def check_size(self, size: int) -> None:
        """``TooLarge`` when ``size`` bytes of body pass the server's limit."""
        if size > self.max_request_bytes:
            raise too_large(size, self.max_request_bytes)

    async def run(self, admission: Admission, body: bytes) -> Reply:
        """Decode, run and encode one admitted request; any error becomes its error reply."""
        try:
            request, plan = self._decoder.decode(
                body,
                admission.header_length,
                model=admission.model,
                version=admission.version,
                tenant=admission.tenant,
            )
            response = await self._core.infer(request)
            payload, json_length = encode_response(response, plan)
        except Exception as error:
            return error_response(error)
        return Reply(200, payload, json_length)


def too_large(size: int, limit: int) -> TooLarge:
    return TooLarge(
        describe(
            "the request body is too large",
            seen=f"{size} bytes, limit {limit}",
            fix="send smaller batches, or raise the server's max_request_bytes",
        )
    )


class InferEndpoint:
    """Runs inference requests off ASGI messages, through :class:`InferSteps`."""

    def __init__(self, steps: InferSteps) -> None:
        self._steps = steps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            admission = self._steps.admit(scope["path"], scope["headers"])
            body = await self._read(receive)
        except Exception as error:
            reply = error_response(error)
        else:
            reply = await self._steps.run(admission, body)
        headers = [(b"content-type", reply.content_type), (b"content-length", b"%d" % len(reply.body))]
        if reply.json_length is not None:
            headers.append((b"inference-header-content-length", b"%d" % reply.json_length))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _read(self, receive: Receive) -> bytes:
        message = await receive()
        body: bytes = message.get("body", b"")
        self._steps.check_size(len(body))
        if not message.get("more_body", False):
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            self._steps.check_size(size)
            chunks.append(chunk)
        return b"".join(chunks)


def _int_header(name: str, value: bytes) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(describe(f"header {name} is not a number", seen=value.decode("latin-1"))) from None
    if number < 0:
        raise InvalidInput(describe(f"header {name} is negative", seen=number))
    return number
