"""The peers benchmark runs end to end (``--quick``: tiny CTR, short steps).
Its timings are not asserted; only that every number and file it promises is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_capacities_ratios_cross_check_and_plot(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    command = [sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--quick", "--models", "ctr",
               "--out", str(out), "--work", str(work)]  # fmt: skip
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr

    results = json.loads((out / "peers.json").read_text())
    (model,) = results["models"]
    assert model["model"] == "ctr"
    assert set(model["capacity"]) == {"kiln", "unoptimized", "fastapi-ort", "litserve"}
    assert set(model["ratios"]) == {"unoptimized", "fastapi-ort", "litserve"}
    for rows in model["rows"].values():  # perf_analyzer's sweep of each server
        assert [r["label"] for r in rows] == ["c=1", "c=4"]
        assert all(r["throughput_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in rows)
        assert all(r["server_cpu_ms_per_request"] > 0 for r in rows)
    assert model["sweep"]["stopped"] == dict.fromkeys(model["rows"], "reached max_concurrency 4")
    assert [s["concurrency"] for s in model["kiln_bench_cross_check"]] == [1, 4]
    assert all(s["ok"] > 0 for s in model["kiln_bench_cross_check"])
    assert (out / "peers-ctr.png").stat().st_size > 10_000
    assert "| ctr | 5 ms |" in (out / "peers.md").read_text()
