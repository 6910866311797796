"""A raw HTTP/1.1 client over a socket, for tests that need to control the bytes on the wire
(pipelining, chunked bodies, half-sent requests, malformed requests)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import orjson

TIMEOUT_S = 30.0


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> object:
        return orjson.loads(self.body)


@dataclass
class RawClient:
    """One connection; ``send`` writes bytes as given, ``reply`` reads one response."""

    address: str
    sock: socket.socket = field(init=False)
    _buffer: bytes = b""

    def __post_init__(self) -> None:
        host, port = self.address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self._buffer += chunk
        return bool(chunk)

    def reply(self, *, head_only: bool = False) -> RawReply:
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill():
                raise ConnectionError(f"the server closed the connection; unread: {self._buffer!r}")
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only or status == 100 else int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            if not self._fill():
                raise ConnectionError("the server closed the connection inside a body")
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return RawReply(status, headers, body)

    def read_until_closed(self) -> bytes:
        """Wait until the server closes the connection (TimeoutError if it does not); the bytes
        it sent before closing that no reply has read."""
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            pass
        rest, self._buffer = self._buffer, b""
        return rest

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, *, version: str = "1.1"
) -> bytes:
    """One request's bytes; a ``content-length`` is added unless a header says otherwise."""
    lines = [f"{method} {path} HTTP/{version}", "host: kiln"]
    given = {name.lower(): value for name, value in (headers or {}).items()}
    if "content-length" not in given and "transfer-encoding" not in given and (body or method == "POST"):
        given["content-length"] = str(len(body))
    lines += [f"{name}: {value}" for name, value in given.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts: bytes, end: bool = True) -> bytes:
    """A chunked body of ``parts`` (with the final zero chunk when ``end``)."""
    data = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)
    return data + (b"0\r\n\r\n" if end else b"")
