"""Durability of the usage ledger under ``kill -9``: a real child process meters events into a
real SQLite file and is killed with SIGKILL mid-stream.

Guarantees checked: every event acknowledged by ``flush()`` is in the file; the events that made
it are a prefix of the stream (nothing torn, no gaps); and every event metered more than one flush
interval before the kill is there (plus a grace for one commit and scheduling on a busy machine).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from kiln.metering import read_usage

CHILD = Path(__file__).with_name("ledger_crash_child.py")
FLUSH_INTERVAL_S = 0.2
STREAM_S = 1.5
GRACE_S = 0.5


def test_kill_9_loses_at_most_the_last_flush_interval(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.db"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(ledger), str(FLUSH_INTERVAL_S)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        first = child.stdout.readline().split()
        assert first[:2] == ["flushed", "100"], first
        flushed_at = float(first[2])
        recorded: dict[int, float] = {}
        while True:
            line = child.stdout.readline().split()
            assert line, child.stderr.read() if child.poll() is not None else "no output"
            assert line[0] == "rec", line
            recorded[int(line[1])] = float(line[2])
            if recorded[int(line[1])] - flushed_at > STREAM_S:
                break
        child.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        rest, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    for line in rest.splitlines():
        _, i, at = line.split()
        recorded[int(i)] = float(at)

    usage = read_usage(ledger)
    acked = {k.version for k in usage if k.tenant == "acked"}
    assert acked == {f"a{i}" for i in range(100)}  # acknowledged by flush => present
    present = sorted(int(k.version) for k in usage if k.tenant == "stream")
    assert present == list(range(len(present)))  # a prefix of the stream: nothing torn, no gaps
    old_enough = {i for i, at in recorded.items() if at < killed_at - FLUSH_INTERVAL_S - GRACE_S}
    assert old_enough, "the stream ran for several flush intervals"
    assert old_enough <= set(present)  # loss bounded by the flush interval
    assert all(u.requests == 1 for u in usage.values())
