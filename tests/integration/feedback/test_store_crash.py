"""A real writer process is killed (SIGKILL) after acknowledging appends: every acknowledged event
is in the store when it is opened again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.feedback import FeedbackStore

pytestmark = pytest.mark.integration

WRITER = """
import sys
from kiln.feedback import FeedbackEvent, FeedbackStore
store = FeedbackStore(sys.argv[1])
batch = 0
while True:
    events = [FeedbackEvent("ctr", 1.0, 0.0, f"{batch}-{i}", {"x": [float(i)]}) for i in range(8)]
    result = store.append(events)
    print(result.last, flush=True)
    batch += 1
"""


def test_acknowledged_events_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert writer.stdout is not None
    acked = [int(writer.stdout.readline()) for _ in range(50)]
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    with FeedbackStore(path) as store:
        offsets = [e.offset for e in store.read("ctr", after=0, limit=100_000)]
    assert offsets[: acked[-1]] == list(range(1, acked[-1] + 1))
    assert len(offsets) >= acked[-1]
