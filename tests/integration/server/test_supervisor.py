"""The supervisor of ``kiln serve --workers N`` with stand-in worker processes (tiny Python
programs): a crashed worker is started again, one exiting with bad input stops everything with
exit code 2, SIGTERM is forwarded and a worker that ignores it is killed after the timeout."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from kiln.server.restarts import BackoffConfig
from kiln.server.workers import Supervisor, WorkerCommand

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="--workers needs Linux")
FAST = BackoffConfig(initial_s=0.01, max_s=0.05)

# Exits 1 on its first run (crash), then waits for SIGTERM and exits 0 (a drained worker).
CRASH_ONCE = """
import pathlib, signal, sys, time
mark = pathlib.Path(sys.argv[1])
if not mark.exists():
    mark.write_text("crashed")
    sys.exit(1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
pathlib.Path(sys.argv[1] + ".ready").write_text("")
while True:
    time.sleep(1)
"""
IGNORE_SIGTERM = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).write_text("")
while True:
    time.sleep(1)
"""


def command(code: str, *args: str) -> WorkerCommand:
    return WorkerCommand([sys.executable, "-c", code, *args], dict(os.environ))


def sigterm_to_me_when(*files: Path) -> threading.Thread:
    """SIGTERM to this process (the supervisor's) once every file exists (the workers are set)."""

    def send() -> None:
        deadline = time.monotonic() + 30
        while not all(f.exists() for f in files):
            if time.monotonic() > deadline:
                return  # the test fails on its own (pytest's timeout)
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_crashed_worker_is_restarted_and_sigterm_drains_every_worker(tmp_path: Path) -> None:
    events: list[str] = []
    marks = {0: tmp_path / "w0", 1: tmp_path / "w1"}
    marks[1].write_text("never crashes")
    sigterm_to_me_when(tmp_path / "w0.ready", tmp_path / "w1.ready")
    supervisor = Supervisor(
        lambda i: command(CRASH_ONCE, str(marks[i])),
        2,
        stop_timeout_s=30,
        on_event=events.append,
        backoff=FAST,
    )
    assert supervisor.run() == 0, events
    assert any(
        e.startswith("kiln worker 0 (pid") and "exit code 1; restarting in 0.01 s" in e for e in events
    )
    assert sum("started" in e for e in events) == 3
    assert sum(e.endswith("exited: exit code 0") for e in events) == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_worker_exiting_with_bad_input_stops_the_server_with_code_2() -> None:
    events: list[str] = []
    supervisor = Supervisor(
        lambda i: command("import sys; sys.exit(2)"),
        2,
        stop_timeout_s=30,
        on_event=events.append,
        backoff=FAST,
    )
    assert supervisor.run() == 2
    assert sum("started" in e for e in events) == 2
    assert any("a restart would not fix it" in e for e in events)


def test_a_worker_that_does_not_stop_is_killed_after_the_timeout(tmp_path: Path) -> None:
    events: list[str] = []
    sigterm_to_me_when(tmp_path / "ignoring")
    supervisor = Supervisor(
        lambda i: command(IGNORE_SIGTERM, str(tmp_path / "ignoring")),
        1,
        stop_timeout_s=0.5,
        on_event=events.append,
        backoff=FAST,
    )
    assert supervisor.run() == 1
    assert any("did not stop within 0.5 s; killing it" in e for e in events)
