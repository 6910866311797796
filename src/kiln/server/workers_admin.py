"""Repository and admin calls of ``kiln serve --workers N`` reach every worker.

A load, unload, rollback or fault change arrives at whichever worker the client's connection
landed on. That worker applies it itself first (a call it refuses is refused for all: nothing is
forwarded), then sends the same call (:class:`~kiln.server.admin_calls.AdminCall`) to every other
worker over a Unix socket in the folder the supervisor made (``<folder>/<index>.admin.sock``,
:func:`answer_admin_calls`). Each of them applies it to its own runtime and repository, and never
sends it further. The client gets the answering worker's result once every worker has applied the
call, or an error naming the workers that did not (:func:`~kiln.server.admin_calls.check_replies`):
a worker that is down or restarting refuses the connection at once, one that is stuck is given
up on after ``REPLY_TIMEOUT_S``.

The read-only ``stats`` call goes the same way (:meth:`AdminFanout.ask`), but its reply carries
the worker's statistics, and a worker that does not answer within the caller's shorter timeout is
only left out (:mod:`kiln.server.workers_stats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from kiln.server.admin_calls import READ_ONLY_OPS, AdminCall, PeerReply, check_replies

log = logging.getLogger("kiln.server")

CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 5.0
_MAX_LINE = 64 * 1024

Apply = Callable[[AdminCall], object]
"""Applies one call to this worker's runtime and repository only (raises kiln's errors)."""
ReplyOf = Callable[[BaseException], tuple[int, str]]
"""An error's HTTP status and the message a client may see."""


def admin_socket_path(folder: Path, worker: int) -> Path:
    """Where worker ``worker`` takes admin calls from the others."""
    return folder / f"{worker}.admin.sock"


@contextlib.asynccontextmanager
async def answer_admin_calls(path: Path, apply: Apply, reply_of: ReplyOf) -> AsyncIterator[None]:
    """While the block runs, apply each call another worker sends to the Unix socket ``path``.

    One call per connection: a JSON line in, ``{"status": 200}`` (``{"status": 200, "result": R}``
    for a read-only call, ``R`` what ``apply`` returned) or ``{"status": S, "error": M}`` out
    (``reply_of`` gives an error's status and message). A stale socket file left by a previous
    run of the same worker is replaced; the socket file is removed when the block ends."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), REPLY_TIMEOUT_S)
            try:
                call = AdminCall.decode(line)
                result = apply(call)
                reply: dict[str, object] = {"status": 200}
                if call.op in READ_ONLY_OPS:
                    reply["result"] = result
            except Exception as error:  # every failure goes back to the sender; none closes the socket
                status, message = reply_of(error)
                reply = {"status": status, "error": message}
            writer.write(orjson.dumps(reply))
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            log.debug("admin socket %s: %s", path, exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_unix_server(answer, path=str(path), limit=_MAX_LINE)
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def send_admin_call(
    path: Path,
    worker: int,
    call: AdminCall,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    reply_timeout_s: float = REPLY_TIMEOUT_S,
    within_s: float | None = None,
) -> PeerReply:
    """Send ``call`` to worker ``worker`` (serving ``path``) and read its answer; a reply with
    ``status=None`` and the reason when it did not answer. With ``within_s``, connecting and
    replying together get at most that long (the reply gets what connecting left of it)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    if within_s is not None:
        connect_timeout_s = min(connect_timeout_s, within_s)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), connect_timeout_s)
    except FileNotFoundError:
        return PeerReply(worker, None, "no admin socket (the worker is starting or stopping)")
    except ConnectionRefusedError:
        return PeerReply(worker, None, "connection refused (the worker is down or restarting)")
    except TimeoutError:
        return PeerReply(worker, None, f"no connection within {connect_timeout_s:g} s (the worker is stuck)")
    except OSError as exc:
        return PeerReply(worker, None, f"could not connect ({exc})")
    allowed_s = reply_timeout_s
    if within_s is not None:
        allowed_s = within_s
        reply_timeout_s = max(0.0, min(reply_timeout_s, within_s - (loop.time() - started)))

    async def exchange() -> bytes:
        writer.write(call.encode())
        await writer.drain()
        return await reader.read()

    try:
        data = orjson.loads(await asyncio.wait_for(exchange(), reply_timeout_s))
        return PeerReply(worker, int(data["status"]), str(data.get("error", "")), data.get("result"))
    except TimeoutError:
        return PeerReply(worker, None, f"no reply within {allowed_s:g} s (the worker is busy or stuck)")
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return PeerReply(worker, None, f"the connection ended without a valid reply ({exc!r})")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass(frozen=True, slots=True)
class AdminFanout:
    """Worker ``worker`` of ``num_workers`` sharing ``folder``: where it answers the other workers'
    admin calls (:attr:`own_socket`) and how it sends its own on (:meth:`forward`)."""

    folder: Path
    worker: int
    num_workers: int

    @property
    def own_socket(self) -> Path:
        return admin_socket_path(self.folder, self.worker)

    async def forward(self, call: AdminCall) -> None:
        """Send ``call`` to every other worker at once; ``WorkersDiverged`` unless all applied it."""
        replies = await asyncio.gather(
            *(send_admin_call(admin_socket_path(self.folder, i), i, call) for i in self._others())
        )
        check_replies(call, self.worker, replies)

    async def ask(self, call: AdminCall, timeout_s: float) -> list[PeerReply]:
        """Send the read-only ``call`` to every other worker at once, allowing each ``timeout_s``
        in all (connecting and replying); their replies, in worker order."""
        return list(
            await asyncio.gather(
                *(
                    send_admin_call(
                        admin_socket_path(self.folder, i),
                        i,
                        call,
                        within_s=timeout_s,
                    )
                    for i in self._others()
                )
            )
        )

    def _others(self) -> list[int]:
        return [i for i in range(self.num_workers) if i != self.worker]
