"""kiln's HTTP server around a plain ASGI app, on real loopback sockets: idle connections close
after the keep-alive time, and closing the server lets a reply in progress finish."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from raw_http import request

from kiln.server.http.server import HttpServer
from kiln.server.listeners import bind_socket

Message = MutableMapping[str, Any]


class GatedApp:
    """Answers ``ok`` to every request, once ``gate`` is set; ``entered`` is set when one waits."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        self.entered.set()
        await self.gate.wait()
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


async def read_reply(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


async def started(app: GatedApp, keep_alive_s: float) -> HttpServer:
    server = HttpServer(
        app, bind_socket("127.0.0.1", 0), steps=None, max_request_bytes=4096, keep_alive_s=keep_alive_s
    )
    await server.start()
    return server


def test_an_idle_connection_closes_after_the_keep_alive_time() -> None:
    async def main() -> None:
        app = GatedApp()
        app.gate.set()
        server = await started(app, keep_alive_s=0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(3):
            writer.write(request("GET", "/x"))
            _, body = await read_reply(reader)
            assert body == b"ok"
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the server closed it
        writer.close()
        await server.close(1.0)

    asyncio.run(main())


def test_closing_lets_the_reply_in_progress_finish_then_closes_its_connection() -> None:
    async def main() -> None:
        app = GatedApp()
        server = await started(app, keep_alive_s=30.0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request("GET", "/x"))
        await asyncio.wait_for(app.entered.wait(), 10)
        closing = asyncio.create_task(server.close(10.0))
        assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # idle: closed at once
        assert not closing.done()
        app.gate.set()
        head, body = await read_reply(reader)
        assert body == b"ok"
        assert b"connection: close" in head
        assert await asyncio.wait_for(reader.read(), 10) == b""
        await asyncio.wait_for(closing, 10)
        writer.close()
        idle_writer.close()

    asyncio.run(main())
