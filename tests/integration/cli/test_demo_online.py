"""``kiln demo online`` for a few seconds: the whole loop runs and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

KILN = [sys.executable, "-c", "from kiln.cli.main import main; main()"]


def test_demo_online_runs_the_loop_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "online"
    command = [
        *KILN,
        "demo",
        "online",
        "--duration",
        "12",
        "--rate",
        "60",
        "--every-s",
        "1",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "versions swapped in under load" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["failed"] == 0
    assert report["requests"] > 100
    assert report["not_ready_answers"] == 0
    assert report["feedback_events"] > 100
    assert [w["start_s"] for w in report["windows"]] == [0.0, 10.0]
    assert report["versions"][0]["version"] == "1"
    assert report["versions"][0]["outcome"] == "serving"
    assert report["swaps"] == sum(report["build_paths"].values())
    markdown = (out / "report.md").read_text()
    assert "| failed requests | 0 |" in markdown
    assert "![latency, AUC and build paths](report.png)" in markdown
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_online_refuses_a_bad_rate(tmp_path: Path) -> None:
    command = [*KILN, "demo", "online", "--rate", "0", "--out", str(tmp_path / "x")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "rate_per_s is out of range" in done.stderr
