"""``/metrics`` of ``kiln serve --workers N``: whichever worker a scrape reaches answers for all.

Each worker serves its own exposition text on a Unix socket in a folder the supervisor made
(``<folder>/<index>.sock``, :func:`serve_own_metrics`). A worker's ``/metrics``
(:func:`create_workers_metrics_app`) reads its own text and every other worker's socket at once,
and :func:`merge_expositions` joins them into one valid exposition: one ``# HELP``/``# TYPE``
block per metric family, holding the samples of every worker (each carries its ``worker``
label). A worker that does not answer in time (restarting, stuck) is left out of that scrape
and counted in ``kiln_metrics_workers_missing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kiln.server")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PEER_TIMEOUT_S = 2.0
_MAX_REQUEST = 8192


@dataclass(frozen=True, slots=True)
class WorkerPeers:
    """Where the workers of one ``kiln serve --workers N`` serve their metrics (and take each
    other's admin calls, ``kiln.server.workers_admin``), and how many workers there are."""

    folder: Path
    num_workers: int


def socket_path(folder: Path, worker: int) -> Path:
    """Where worker ``worker`` serves its own metrics."""
    return folder / f"{worker}.sock"


def merge_expositions(texts: Sequence[str]) -> str:
    """Join Prometheus text expositions (format 0.0.4) of several processes into one.

    Families are kept in order of first appearance; the ``# HELP`` and ``# TYPE`` lines of a
    family come from the first text that has it, the samples from every text in turn. Samples
    must already differ by a label (kiln's ``worker``); nothing is deduplicated.
    """
    order: list[str] = []
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    owner: dict[str, int] = {}  # the text whose HELP/TYPE lines a family keeps
    for index, text in enumerate(texts):
        family = ""
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                family = line.split(" ", 3)[2]
                if family not in owner:
                    owner[family] = index
                    order.append(family)
                    heads[family], samples[family] = [], []
                if owner[family] == index:
                    heads[family].append(line)
            elif line.strip() and not line.startswith("#"):
                if family not in owner:  # samples before any HELP/TYPE line
                    owner[family] = index
                    order.append(family)
                    heads[family], samples[family] = [], []
                samples[family].append(line)
    lines = [line for name in order for line in (*heads[name], *samples[name])]
    return "\n".join(lines) + "\n" if lines else ""


def missing_workers_text(missing: int, worker: str) -> str:
    """The gauge counting workers left out of this scrape, labelled with the answering worker."""
    return (
        "# HELP kiln_metrics_workers_missing Workers whose metrics did not answer this scrape in time.\n"
        "# TYPE kiln_metrics_workers_missing gauge\n"
        f'kiln_metrics_workers_missing{{worker="{worker}"}} {missing}\n'
    )


async def serve_own_metrics(path: Path, text: Callable[[], str]) -> asyncio.AbstractServer:
    """Serve ``text()`` (this worker's exposition) to whoever connects to the Unix socket ``path``.

    A stale socket file left by a previous run of the same worker is replaced.
    """
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await asyncio.wait_for(reader.readuntil(b"\n"), PEER_TIMEOUT_S)
            body = (await asyncio.to_thread(text)).encode()
            writer.write(body)
            await writer.drain()
        except (OSError, TimeoutError) as exc:
            log.debug("metrics socket %s: %s", path, exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_unix_server(answer, path=str(path), limit=_MAX_REQUEST)


async def read_peer_metrics(path: Path, timeout_s: float = PEER_TIMEOUT_S) -> str | None:
    """The exposition text served at ``path``; ``None`` when nothing answers within ``timeout_s``."""

    async def read() -> str:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(b"metrics\n")
            await writer.drain()
            return (await reader.read()).decode()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except (OSError, TimeoutError, UnicodeDecodeError) as exc:
        log.debug("metrics of %s not read: %s", path, exc)
        return None


async def all_workers_text(folder: Path, worker: int, num_workers: int, own_text: Callable[[], str]) -> str:
    """This worker's exposition merged with every other worker's (see the module docstring)."""
    others = [socket_path(folder, i) for i in range(num_workers) if i != worker]
    own, peers = await asyncio.gather(
        asyncio.to_thread(own_text), asyncio.gather(*map(read_peer_metrics, others))
    )
    answered = [text for text in peers if text is not None]
    missing = len(peers) - len(answered)
    texts = [own, *answered, missing_workers_text(missing, str(worker))]
    return merge_expositions(texts)


def create_workers_metrics_app(
    folder: Path, worker: int, num_workers: int, own_text: Callable[[], str]
) -> Callable[..., Any]:
    """An ASGI app answering every request with all workers' metrics (gzip when asked for)."""

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        body = (await all_workers_text(folder, worker, num_workers, own_text)).encode()
        headers = [(b"content-type", CONTENT_TYPE.encode())]
        accepted = dict(scope.get("headers") or []).get(b"accept-encoding", b"")
        if b"gzip" in accepted:
            body = gzip.compress(body, compresslevel=1)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
