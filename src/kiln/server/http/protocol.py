"""kiln's HTTP/1.1 protocol: an asyncio protocol on the httptools parser.

Inference requests (``POST /v2/models/{m}[/versions/{v}]/infer``) are served straight off the
parser's callbacks through :class:`~kiln.server.http.infer.InferSteps`: admitted on their headers,
their body gathered within the size limit, run, and answered with one socket write, with no ASGI
messages, scope or routing in between. Every other request is read whole and handed to the ASGI
app (:mod:`kiln.server.http.asgi`), which answers exactly as before.

Per connection, requests are answered one at a time, in the order they arrived (pipelined
requests wait, parsed, in a short queue; reading pauses while it is full or while the client does
not read its replies). A body passing ``max_request_bytes`` is answered 413 as soon as the limit is
passed, and a request the parser cannot read is answered 400; both then close the connection,
since what follows on it cannot be trusted. A connection without a request for ``keep_alive_s`` is
closed, by one timer per connection that is re-armed lazily (not one per request).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

import httptools
from starlette.types import ASGIApp

from kiln.errors import InvalidInput, describe
from kiln.server.core import TooLarge
from kiln.server.http.asgi import call_app
from kiln.server.http.infer import Admission, InferSteps, Reply, error_response, is_infer, too_large
from kiln.server.http.wire import HeadLayouts, continue_line

log = logging.getLogger("kiln.server")

MAX_QUEUED = 16
"""Parsed requests waiting on one connection before it stops reading."""


@dataclass
class HttpShared:
    """What every connection of one server shares."""

    app: ASGIApp
    steps: InferSteps | None
    heads: HeadLayouts
    max_request_bytes: int
    keep_alive_s: float
    connections: set[HttpConnection] = field(default_factory=set)
    stopping: bool = False
    on_idle: asyncio.Event = field(default_factory=asyncio.Event)


class _Request:
    __slots__ = (
        "admission",
        "chunks",
        "error",
        "expect",
        "headers",
        "infer",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_path",
        "size",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.method = "GET"
        self.path = self.version = ""
        self.raw_path = self.query = b""
        self.infer = self.expect = False
        self.keep_alive = True
        self.admission: Admission | None = None
        self.error: BaseException | None = None

    def body(self) -> bytes:
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)


class _Refused(Exception):
    """Stops the parser: the connection answers what it has and closes."""


class HttpConnection(asyncio.Protocol):
    """One client connection; see the module's docstring."""

    def __init__(self, shared: HttpShared) -> None:
        self._shared = shared
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._request: _Request | None = None
        self._queue: deque[_Request] = deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._refused = False
        self._write_paused = False
        self._reading_paused = False
        self._continue_due = False
        self._disconnected: asyncio.Event | None = None
        self._last_s = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._client: tuple[str, int] | None = None
        self._server: tuple[str, int] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._shared.connections.add(self)
        self._client = _address(transport.get_extra_info("peername"))
        self._server = _address(transport.get_extra_info("sockname"))
        self._timer = self._loop.call_later(self._shared.keep_alive_s, self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
        if self._disconnected is not None:
            self._disconnected.set()
        shared = self._shared
        shared.connections.discard(self)
        if not shared.connections:
            shared.on_idle.set()

    def data_received(self, data: bytes) -> None:
        if self._refused or self._closed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if not self._refused:
                log.exception("kiln's HTTP protocol failed on a request")
                self._refuse(InvalidInput(describe("the server could not read the request")))
        except httptools.HttpParserUpgrade:
            # The request asking to upgrade is queued, answered as plain HTTP; what follows it on
            # the connection is another protocol, so nothing more is read and the answer closes.
            self._refused = True
            self._request = None
            self._update_reading()
            if not self._busy:
                self._next()
        except httptools.HttpParserError as exc:
            self._refuse(
                InvalidInput(
                    describe(
                        "malformed HTTP request", seen=str(exc) or type(exc).__name__, fix="send HTTP/1.1"
                    )
                )
            )

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._request = _Request()

    def on_url(self, url: bytes) -> None:
        assert self._request is not None
        self._request.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._request is not None
        self._request.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        request = self._request
        assert request is not None
        request.method = method = self._parser.get_method().decode("ascii")
        raw_path, _, request.query = request.url.partition(b"?")
        path = raw_path.decode("latin-1")
        request.raw_path, request.path = raw_path, unquote(path) if "%" in path else path
        steps = self._shared.steps
        try:
            if steps is not None and is_infer(method, request.path):
                request.infer = True
                request.admission = steps.admit(request.path, request.headers)
            else:
                self._check_declared_size(request)
        except Exception as error:
            request.error = error
            if isinstance(error, TooLarge):
                self._refuse(error)
                raise _Refused from None
        for name, value in request.headers:
            if name == b"expect" and value.lower() == b"100-continue":
                request.expect = True
                self._continue_due = True
                self._send_continue()

    def on_body(self, body: bytes) -> None:
        request = self._request
        assert request is not None
        request.size += len(body)
        if request.size > self._shared.max_request_bytes:
            self._refuse(too_large(request.size, self._shared.max_request_bytes))
            raise _Refused
        if request.error is None:
            request.chunks.append(body)

    def on_message_complete(self) -> None:
        request = self._request
        assert request is not None
        self._request = None
        self._continue_due = False
        request.keep_alive = self._parser.should_keep_alive()
        request.version = self._parser.get_http_version()
        self._queue.append(request)
        if self._busy:
            self._update_reading()
        else:
            self._next()

    # -- answering ------------------------------------------------------------------------------

    def _check_declared_size(self, request: _Request) -> None:
        for name, value in request.headers:
            if name == b"content-length" and value.isdigit() and int(value) > self._shared.max_request_bytes:
                raise too_large(int(value), self._shared.max_request_bytes)

    def _refuse(self, error: BaseException) -> None:
        """Answer ``error`` once the requests before it are answered, then close; read no more."""
        self._refused = True
        self._request = None
        refused = _Request()
        refused.error = error
        refused.keep_alive = False
        self._queue.append(refused)
        self._update_reading()
        if not self._busy:
            self._next()

    def _next(self) -> None:
        while self._queue and not self._busy and not self._closed:
            request = self._queue.popleft()
            if request.error is not None:
                self._answer(request, error_response(request.error))
            elif request.infer:
                self._busy = True
                self._task = self._loop.create_task(self._infer(request))
            else:
                self._busy = True
                self._task = self._loop.create_task(self._asgi(request))
        if not self._busy:
            self._update_reading()
            self._send_continue()

    async def _infer(self, request: _Request) -> None:
        steps = self._shared.steps
        assert steps is not None
        assert request.admission is not None
        reply = await steps.run(request.admission, request.body())
        self._busy = False
        self._answer(request, reply)
        self._next()

    def _answer(self, request: _Request, reply: Reply) -> None:
        keep_alive = self._keeps_alive(request)
        data = self._shared.heads.reply(
            reply.status, reply.content_type, reply.body, reply.json_length, keep_alive
        )
        self._write(data, keep_alive)

    async def _asgi(self, request: _Request) -> None:
        if self._disconnected is None:
            self._disconnected = asyncio.Event()
            if self._closed:
                self._disconnected.set()
        reply = await call_app(self._shared.app, self._scope(request), request.body(), self._disconnected)
        keep_alive = self._keeps_alive(request)
        data = self._shared.heads.generic(
            reply.status, reply.headers, reply.body, keep_alive, head_only=request.method == "HEAD"
        )
        self._busy = False
        self._write(data, keep_alive)
        self._next()

    def _keeps_alive(self, request: _Request) -> bool:
        """Whether the connection stays open after answering ``request``: not when the client or
        the server's shutdown says so, nor after the last answer of a connection that reads no more."""
        return request.keep_alive and not self._shared.stopping and not (self._refused and not self._queue)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        transport = self._transport
        if self._closed or transport is None:
            return
        transport.write(data)
        self._last_s = self._loop.time()
        if not keep_alive:
            self._closed = True
            self._queue.clear()
            transport.close()

    def _send_continue(self) -> None:
        if self._continue_due and not self._busy and not self._queue and self._transport is not None:
            self._continue_due = False
            if not self._closed:
                self._transport.write(continue_line())

    def _scope(self, request: _Request) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.version or "1.1",
            "server": self._server,
            "client": self._client,
            "scheme": "http",
            "method": request.method,
            "root_path": "",
            "path": request.path,
            "raw_path": request.raw_path,
            "query_string": request.query,
            "headers": request.headers,
        }

    # -- reading, idling, closing ---------------------------------------------------------------

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        pause = self._refused or self._write_paused or len(self._queue) >= MAX_QUEUED
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def is_idle(self) -> bool:
        """No request being read, waiting or running."""
        return not self._busy and not self._queue and self._request is None

    def close_if_idle(self) -> None:
        """Close now when idle; otherwise the reply in progress closes it (the server is stopping)."""
        if self.is_idle() and self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _on_timer(self) -> None:
        if self._closed:
            return
        keep_alive_s = self._shared.keep_alive_s
        left = keep_alive_s
        if self.is_idle():
            left = self._last_s + keep_alive_s - self._loop.time()
            if left <= 0:
                self.close_if_idle()
                return
        self._timer = self._loop.call_later(left, self._on_timer)


def _address(value: object) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
