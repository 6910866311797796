"""uvicorn's httptools protocol, answering each response with one socket write.

uvicorn writes a response's status line and headers, then its body, as two writes: two TCP
segments and two wake-ups of the client for every small inference reply. This protocol holds a
header-only write back and sends it together with the write that follows (the body). Anything held
is flushed on the next loop iteration at the latest, and before the connection closes, so every
byte still goes out in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_STATUS_LINE = b"HTTP/1."
_HEADER_END = b"\r\n\r\n"


class CoalescingTransport:
    """Wraps a transport: a write ending a header block waits for the next write (or the next tick)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
            return
        if isinstance(data, bytes) and data.startswith(_STATUS_LINE) and data.endswith(_HEADER_END):
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class KServeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`CoalescingTransport` writes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.transport = CoalescingTransport(self.transport, self.loop)  # type: ignore[assignment]
