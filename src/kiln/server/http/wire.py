"""HTTP/1.1 response framing for kiln's HTTP protocol: status lines, header blocks, the Date header.

A reply's head is built from a cached *layout* (status line and content type, fixed for a given
status, content type and connection persistence) plus the lengths and the current Date line, so
that a small inference reply costs a few byte concatenations and one socket write.
"""

from __future__ import annotations

import http
from email.utils import formatdate

_KEEP = b""
_CLOSE = b"connection: close\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode("latin-1"))


def date_line(now_s: float) -> bytes:
    """The ``date`` header line for the time ``now_s`` (Unix seconds)."""
    return b"date: " + formatdate(now_s, usegmt=True).encode("latin-1") + b"\r\n"


class HeadLayouts:
    """Response heads from cached layouts; one instance per server (its Date line is refreshed by
    the server once a second through :meth:`set_date`)."""

    def __init__(self, now_s: float) -> None:
        self._layouts: dict[tuple[int, bytes, bool], bytes] = {}
        self.date = date_line(now_s)

    def set_date(self, now_s: float) -> None:
        self.date = date_line(now_s)

    def _layout(self, status: int, content_type: bytes, keep_alive: bool) -> bytes:
        key = (status, content_type, keep_alive)
        layout = self._layouts.get(key)
        if layout is None:
            layout = status_line(status) + b"content-type: " + content_type + b"\r\n"
            layout += _KEEP if keep_alive else _CLOSE
            if len(self._layouts) < 256:
                self._layouts[key] = layout
        return layout

    def reply(
        self, status: int, content_type: bytes, body: bytes, json_length: int | None, keep_alive: bool
    ) -> bytes:
        """Head and body of a reply, as one buffer (``json_length``: the
        ``inference-header-content-length`` to send, if any)."""
        head = self._layout(status, content_type, keep_alive) + b"content-length: %d\r\n" % len(body)
        if json_length is not None:
            head += b"inference-header-content-length: %d\r\n" % json_length
        return head + self.date + b"\r\n" + body

    def generic(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        *,
        head_only: bool = False,
    ) -> bytes:
        """A reply with the headers an ASGI app gave (``content-length`` added when missing;
        ``connection`` and ``date`` set here). ``head_only``: no body (a HEAD request)."""
        parts = [status_line(status)]
        has_length = False
        for name, value in headers:
            lower = name.lower()
            if lower in (b"connection", b"date", b"transfer-encoding"):
                continue
            has_length = has_length or lower == b"content-length"
            parts.append(name + b": " + value + b"\r\n")
        if not has_length:
            parts.append(b"content-length: %d\r\n" % len(body))
        if not keep_alive:
            parts.append(_CLOSE)
        parts.append(self.date)
        parts.append(b"\r\n")
        if not head_only:
            parts.append(body)
        return b"".join(parts)


def continue_line() -> bytes:
    """The interim ``100 Continue`` reply to a request that sent ``Expect: 100-continue``."""
    return _CONTINUE
