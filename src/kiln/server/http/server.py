"""kiln's HTTP server: :class:`~kiln.server.http.protocol.HttpConnection` on a socket kiln binds
itself (so port 0 works and the real port is known, and workers can share it with SO_REUSEPORT),
on the running event loop. Closing stops listening, closes idle connections at once, lets busy
ones finish their reply, and cuts whatever is still open after the timeout."""

from __future__ import annotations

import asyncio
import socket
import time

from starlette.types import ASGIApp

from kiln.server.http.infer import InferSteps
from kiln.server.http.protocol import HttpConnection, HttpShared
from kiln.server.http.wire import HeadLayouts

KEEP_ALIVE_S = 5.0
"""How long an idle connection stays open."""
BACKLOG = 2048


class HttpServer:
    """Serves ``app`` on ``sock`` (bound, not yet listening); inference requests go straight to
    ``steps`` when given (``KServeApp.steps``), everything else to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        sock: socket.socket,
        *,
        steps: InferSteps | None,
        max_request_bytes: int,
        keep_alive_s: float = KEEP_ALIVE_S,
    ) -> None:
        self._sock = sock
        self._shared = HttpShared(app, steps, HeadLayouts(time.time()), max_request_bytes, keep_alive_s)
        self._server: asyncio.Server | None = None
        self._clock: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        shared = self._shared
        self._server = await loop.create_server(
            lambda: HttpConnection(shared), sock=self._sock, backlog=BACKLOG
        )
        self._tick()

    def _tick(self) -> None:
        now = time.time()
        self._shared.heads.set_date(now)
        delay = 1.0 - (now % 1.0)
        self._clock = asyncio.get_running_loop().call_later(delay, self._tick)

    async def close(self, timeout_s: float) -> None:
        """Stop listening, let replies in progress finish (up to ``timeout_s``), close everything."""
        shared = self._shared
        shared.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(shared.connections):
            connection.close_if_idle()
        if shared.connections:
            shared.on_idle.clear()
            try:
                await asyncio.wait_for(shared.on_idle.wait(), timeout_s)
            except TimeoutError:
                for connection in list(shared.connections):
                    connection.abort()
        if self._clock is not None:
            self._clock.cancel()
        if self._server is not None:
            await self._server.wait_closed()
