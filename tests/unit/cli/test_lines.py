"""``say`` writes a line and its newline in one write, so processes sharing a pipe never
interleave inside a line, even with unbuffered stdout (``PYTHONUNBUFFERED=1``)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

WRITER = """
import sys
from kiln.cli._lines import say
tag = sys.argv[1]
for i in range(2000):
    say(f"line {tag} {i} " + "x" * 40)
"""


def test_lines_from_two_unbuffered_processes_never_interleave() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    read, write = os.pipe()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, tag], stdout=write, env=env) for tag in "ab"]
    os.close(write)
    with os.fdopen(read) as pipe:
        lines = pipe.read().splitlines()
    assert [w.wait(60) for w in writers] == [0, 0]
    assert len(lines) == 4000
    bad = [
        line
        for line in lines
        if not (line.startswith("line ") and line.endswith("x" * 40) and line.count("line") == 1)
    ]
    assert bad == []


def test_a_stream_without_a_file_descriptor_still_gets_the_line() -> None:
    from kiln.cli._lines import say

    out = io.StringIO()
    say("kiln worker 0 ready (pid 1)", out)
    assert out.getvalue() == "kiln worker 0 ready (pid 1)\n"
