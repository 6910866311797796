"""Admin calls between workers over real Unix sockets: several ``ServerCore``s in one loop stand
for the workers of ``kiln serve --workers N`` (each with its own repository fake)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest
from server_fakes import FakeControl, make_runtime

from kiln.errors import EngineFailed, ModelNotFound
from kiln.runtime import FaultSpec
from kiln.server.admin_calls import AdminCall, WorkersDiverged
from kiln.server.core import ServerCore
from kiln.server.http.errors import http_status
from kiln.server.messages import client_message
from kiln.server.workers_admin import AdminFanout, admin_socket_path, answer_admin_calls, send_admin_call


def reply_of(error: BaseException) -> tuple[int, str]:
    return http_status(error), client_message(error)


def workers(folder: Path, count: int) -> list[tuple[ServerCore, FakeControl]]:
    made = []
    for index in range(count):
        control = FakeControl()
        control.set_state("ctr", "1", "READY")
        core = ServerCore(make_runtime("pair"), control, fanout=AdminFanout(folder, index, count))
        made.append((core, control))
    return made


@contextlib.asynccontextmanager
async def answering(folder: Path, cores: Sequence[ServerCore], indexes: Sequence[int]) -> AsyncIterator[None]:
    """Workers ``indexes`` answer the others' calls, as ``kiln.server.serve.serve`` has them do."""
    async with contextlib.AsyncExitStack() as stack:
        for index in indexes:
            path = admin_socket_path(folder, index)
            await stack.enter_async_context(answer_admin_calls(path, cores[index].apply, reply_of))
        yield


def test_a_call_reaches_every_worker_once_and_is_never_sent_further(tmp_path: Path) -> None:
    made = workers(tmp_path, 3)
    cores = [core for core, _ in made]
    rows = {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)}

    async def scenario() -> None:
        async with answering(tmp_path, cores, [0, 1, 2]):
            result = await cores[1].admin(AdminCall("unload", "ctr"))
            assert result == [{"name": "ctr", "version": "1", "state": "UNLOADING", "reason": ""}]
            await cores[0].admin(AdminCall("faults", "pair", FaultSpec(fail_next=100)))
            for core in cores:  # every worker's engine now fails
                with pytest.raises(EngineFailed):
                    await core.runtime.infer("pair", rows)
            await cores[2].admin(AdminCall("faults", "pair", None))
            for core in cores:
                assert (await core.runtime.infer("pair", rows)).route == "primary"

    asyncio.run(scenario())
    assert [control.calls for _, control in made] == [[("unload", "ctr")]] * 3


def test_a_call_refused_here_goes_to_no_other_worker(tmp_path: Path) -> None:
    made = workers(tmp_path, 2)
    cores = [core for core, _ in made]

    async def scenario() -> None:
        async with answering(tmp_path, cores, [0, 1]):
            with pytest.raises(ModelNotFound, match="no model 'nope'"):
                await cores[0].admin(AdminCall("load", "nope"))

    asyncio.run(scenario())
    assert [control.calls for _, control in made] == [[], []]


def test_a_worker_that_refuses_or_is_down_is_named_and_the_others_still_apply(tmp_path: Path) -> None:
    made = workers(tmp_path, 4)
    cores = [core for core, _ in made]
    made[2][1].entries = []  # worker 2's repository has no ctr
    stale = socket.socket(socket.AF_UNIX)  # worker 3 died: its socket file stays, nobody listens
    stale.bind(str(admin_socket_path(tmp_path, 3)))
    stale.close()

    async def scenario() -> str:
        async with answering(tmp_path, cores, [0, 1, 2]):
            with pytest.raises(WorkersDiverged) as caught:
                await cores[0].admin(AdminCall("load", "ctr"))
        return str(caught.value)

    message = asyncio.run(scenario())
    assert message.startswith("load of model 'ctr' was applied on worker(s) 0, 1 only")
    assert "worker 2 refused it (404): the repository has no model 'ctr'" in message
    assert "worker 3 did not answer: connection refused (the worker is down or restarting)" in message
    assert [control.calls for _, control in made] == [[("load", "ctr")], [("load", "ctr")], [], []]


def test_a_worker_not_answering_yet_or_stuck_is_given_up_on(tmp_path: Path) -> None:
    call = AdminCall("unload", "ctr")

    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never replies; returns when the sender gives up and closes

    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # died while applying the call

    async def scenario() -> None:
        missing = await send_admin_call(tmp_path / "5.admin.sock", 5, call)
        assert (missing.status, missing.message) == (
            None,
            "no admin socket (the worker is starting or stopping)",
        )
        server = await asyncio.start_unix_server(stuck, path=str(tmp_path / "6.admin.sock"))
        async with server:
            late = await send_admin_call(tmp_path / "6.admin.sock", 6, call, reply_timeout_s=0.05)
        assert (late.status, late.message) == (None, "no reply within 0.05 s (the worker is busy or stuck)")
        server = await asyncio.start_unix_server(hangs_up, path=str(tmp_path / "7.admin.sock"))
        async with server:
            gone = await send_admin_call(tmp_path / "7.admin.sock", 7, call)
        assert gone.status is None
        assert gone.message.startswith("the connection ended without a valid reply")

    asyncio.run(scenario())


def test_a_bad_line_gets_a_400_naming_the_problem_and_the_socket_goes_with_the_block(tmp_path: Path) -> None:
    path = admin_socket_path(tmp_path, 1)
    applied: list[AdminCall] = []

    async def send(line: bytes) -> dict[str, object]:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(line)
        reply = orjson.loads(await reader.read())
        writer.close()
        return dict(reply)

    async def scenario() -> None:
        path.write_text("stale")  # a previous run's leftover is replaced
        async with answer_admin_calls(path, applied.append, reply_of):
            assert await send(b'{"op": "reload", "model": "ctr"}\n') == {
                "status": 400,
                "error": "unknown admin call (seen: reload); one of load, unload, rollback, faults, stats",
            }
            assert await send(AdminCall("rollback", "ctr").encode()) == {"status": 200}
        assert not path.exists()

    asyncio.run(scenario())
    assert applied == [AdminCall("rollback", "ctr")]


ROWS = {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)}


def successes(body: dict[str, object]) -> dict[tuple[str, str], int]:
    entries = body["model_stats"]
    assert isinstance(entries, list)
    return {(e["name"], e["version"]): e["inference_stats"]["success"]["count"] for e in entries}


def test_statistics_asked_of_one_worker_cover_every_worker_and_change_nothing(tmp_path: Path) -> None:
    made = workers(tmp_path, 3)
    cores = [core for core, _ in made]

    async def scenario() -> None:
        async with answering(tmp_path, cores, [0, 1, 2]):
            for index, core in enumerate(cores):  # worker i served i + 1 requests
                for _ in range(index + 1):
                    await core.runtime.infer("pair", ROWS)
            before = [core.model_statistics() for core in cores]
            for asked in cores:
                reply = await asked.statistics()
                assert successes(reply.body) == {("pair", "1"): 6}
                assert reply.missing == ()
                scoped = await asked.statistics("pair", "1")
                assert scoped.body == reply.body
            assert [core.model_statistics() for core in cores] == before  # read-only
            assert (await cores[1].statistics()).headers() == [("kiln-worker", "1")]

    asyncio.run(scenario())
    assert [control.calls for _, control in made] == [[], [], []]


def test_statistics_leave_out_a_worker_that_is_down_or_stuck_and_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kiln.server.core.STATS_TIMEOUT_S", 0.05)  # the stuck worker's wait
    made = workers(tmp_path, 4)
    cores = [core for core, _ in made]
    stale = socket.socket(socket.AF_UNIX)  # worker 3 died: its socket file stays, nobody listens
    stale.bind(str(admin_socket_path(tmp_path, 3)))
    stale.close()

    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # worker 2 takes the connection but never replies

    async def scenario() -> None:
        server = await asyncio.start_unix_server(stuck, path=str(admin_socket_path(tmp_path, 2)))
        async with server, answering(tmp_path, cores, [0, 1]):
            for core in cores[:2]:
                await core.runtime.infer("pair", ROWS)
            reply = await cores[0].statistics("pair")
        assert successes(reply.body) == {("pair", "1"): 2}
        assert reply.missing == (2, 3)
        assert reply.headers() == [("kiln-worker", "0"), ("kiln-workers-missing", "2,3")]
        assert reply.problems[0] == "worker 2: no reply within 0.05 s (the worker is busy or stuck)"

    asyncio.run(scenario())


def test_statistics_of_a_model_another_worker_does_not_serve_count_nothing_there(tmp_path: Path) -> None:
    folder = tmp_path
    cores = [
        ServerCore(make_runtime("pair"), fanout=AdminFanout(folder, 0, 2)),
        ServerCore(make_runtime("text"), fanout=AdminFanout(folder, 1, 2)),
    ]

    async def scenario() -> None:
        async with answering(folder, cores, [0, 1]):
            await cores[0].runtime.infer("pair", ROWS)
            reply = await cores[0].statistics("pair")
            assert (successes(reply.body), reply.missing) == ({("pair", "1"): 1}, ())
            everything = await cores[1].statistics()
            assert successes(everything.body) == {("text", "1"): 0, ("pair", "1"): 1}
            with pytest.raises(ModelNotFound):  # decided by the answering worker, as with one
                await cores[1].statistics("pair")

    asyncio.run(scenario())


def test_one_process_asks_nobody(tmp_path: Path) -> None:
    core = ServerCore(make_runtime("pair"))

    async def scenario() -> None:
        await core.runtime.infer("pair", ROWS)
        reply = await core.statistics()
        assert (reply.body, reply.headers()) == (core.model_statistics(), [])

    asyncio.run(scenario())
