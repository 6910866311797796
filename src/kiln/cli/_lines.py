"""One status line, written whole.

The workers of ``kiln serve --workers N`` and their supervisor share one stdout. ``print`` on an
unbuffered stream (``PYTHONUNBUFFERED=1``) writes the text and its newline as two writes, so two
processes' lines can interleave into one ("...ready (pid 7)kiln worker 0 ready..."). A single
``write`` of at most ``PIPE_BUF`` bytes to a pipe is atomic, so each line goes out in one.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TextIO


def say(line: str, stream: TextIO | None = None) -> None:
    """Write ``line`` and its newline to ``stream`` (stdout by default) in one write."""
    out = sys.stdout if stream is None else stream
    try:
        fd = out.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # a captured stream (tests)
        print(line, file=out, flush=True)
        return
    out.flush()  # anything already buffered goes first
    data = (line + "\n").encode(out.encoding or "utf-8", errors="replace")
    while data:
        data = data[os.write(fd, data) :]
