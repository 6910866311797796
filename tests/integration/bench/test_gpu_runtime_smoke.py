"""benchmarks/gpu/run.py --smoke runs the runtime stages end to end on the CPU (tiny CNN, torch
backend with compile=eager); no time is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the GPU benchmark's stages use the torch backend (the `torch` extra)")

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_runtime_stages_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu" / "run.py"), "--smoke", "--out", str(out)]
    done = subprocess.run(
        [*command, "--work", str(tmp_path / "work"), "--only", "runtime,runtime-swaps"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert done.returncode == 0, done.stdout[-2000:] + log[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert {"runtime-step", "runtime-ratio", "runtime-swaps", "runtime-fault"} <= set(kinds)
    steps = [r for r in records if r["kind"] == "runtime-step"]
    assert {r["mode"] for r in steps} == {"batching", "one per run"}
    assert {r["phase"] for r in steps} == {"coarse", "fine"}
    swaps = [r for r in records if r["kind"] == "runtime-swaps"]
    assert len(swaps) == 2
    assert all(r["failed"] == 0 and r["swaps"] >= 1 for r in swaps)
    accuracy = {r["variant"]: r for r in records if r["kind"] == "accuracy" and r["stage"] == "runtime"}
    assert accuracy["v1 fp16 engine vs ONNX Runtime fp32 v1"]["rel_l2"] < 1e-2
    assert accuracy["v1 engine vs v0 reference (must differ)"]["rel_l2"] > 0.1
    fault = next(r for r in records if r["kind"] == "runtime-fault")
    assert fault["retried"] > 0
    assert fault["failed"] == 0
    table = (out / "table.md").read_text()
    assert "Dynamic batching vs one request per run" in table
    assert "Hot swaps under load" in table
    detail = json.loads((out / "runtime-swaps-detail.json").read_text())
    assert set(detail["soaks"]) == {"warm-up on every bucket", "warm-up on batch 1"}
