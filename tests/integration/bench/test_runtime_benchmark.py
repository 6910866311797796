"""benchmarks/runtime.py --quick runs end to end on tiny models (no time is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_quick_runtime_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "runtime.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "runtime.json").read_text())
    assert len(report["soaks"]) == 4  # two models, two warm-up policies (--warmups default,every)
    assert {name.split(" ")[0] for name in report["soaks"]} == {"ctr", "cnn"}
    for soak in report["soaks"].values():
        kinds = {m["kind"] for m in soak["markers"]}
        assert {"load-start", "active", "released"} <= kinds
        assert soak["step"]["failed"] == 0
    assert any(name.startswith("cnn batching") for name in report["variants"])
    text = (out / "runtime.md").read_text()
    for heading in ("Hot swap under load", "One injected transient fault", "Dynamic batching vs one request"):
        assert heading in text
    for name in ("ctr-batching.png", "ctr-swaps-1.png", "cnn-batching.png", "cnn-swaps-2.png"):
        assert (out / name).stat().st_size > 10_000
