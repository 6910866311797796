"""benchmarks/server.py --quick runs end to end: kiln's server and the reference servers, each
measured by perf_analyzer (no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PERF_ANALYZER = Path(sys.executable).parent / "perf_analyzer"


@pytest.mark.slow
def test_quick_server_benchmark(tmp_path: Path) -> None:
    if not PERF_ANALYZER.exists():
        pytest.skip(f"perf_analyzer is not installed at {PERF_ANALYZER}; run `make install`")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "server.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads((out / "server.json").read_text())
    measured = {(row["server"], row["protocol"]) for row in report["rows"]}
    assert measured == {
        ("kiln", "http"),
        ("kiln", "grpc"),
        ("plain ORT", "http"),
        ("bare (no model)", "http"),
        ("bare (no model)", "grpc"),
    }
    for row in report["rows"]:
        assert row["per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["server_cpu_us"] > 0
    text = (out / "server.md").read_text()
    assert "| kiln | http |" in text
    assert "| kiln | grpc |" in text
