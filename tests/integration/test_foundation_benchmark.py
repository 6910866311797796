"""The foundation benchmark runs end to end (``--quick``: tiny models, short blocks). Its
timings are not asserted; only that every number it promises is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_every_table_and_number(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    command = [sys.executable, str(ROOT / "benchmarks" / "foundation.py"), "--quick", "--only", "ctr", "cnn"]
    run = subprocess.run(
        [*command, "--out", str(out), "--work", str(work)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr

    results = json.loads((out / "foundation.json").read_text())
    assert [m["name"] for m in results["models"]] == ["ctr", "cnn"]
    for model in results["models"]:
        assert set(model["speed"]) == {"fp32 unoptimized", "kiln fp32", "kiln int8", "kiln int8, spinning"}
        for speed in model["speed"].values():
            assert speed["b1_p50_ms"] > 0
            assert speed["b1_p99_ms"] >= speed["b1_p50_ms"]
            assert speed["b32_samples_per_s"] > 0
        assert set(model["accuracy"]) == {"kiln fp32", "kiln int8", "kiln int8, spinning"}
        builds = model["builds"]
        assert builds["paths"]["full"] == "build"
        assert builds["paths"]["hit"] == "hit"
        assert builds["paths"]["tune"] == "refit"
        assert builds["paths"]["update"] in {"refit", "calibration-reuse", "recalibrate"}
        assert builds["hit_ratio"] > 0
        assert builds["tune_ratio"] > 0
        assert builds["update_ratio"] > 0
    cnn = results["models"][1]
    assert 0.0 <= cnn["accuracy"]["kiln int8"]["top1_agreement"] <= 1.0
    markdown = (out / "foundation.md").read_text()
    assert "| cnn | kiln int8 |" in markdown
    assert "weight-only update" in markdown
    assert "Targets:" in markdown


def test_builds_only_skips_the_speed_and_accuracy_runs(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    command = [sys.executable, str(ROOT / "benchmarks" / "foundation.py"), "--quick", "--builds-only"]
    run = subprocess.run(
        [*command, "--only", "ctr", "--out", str(out), "--work", str(work)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr

    results = json.loads((out / "foundation.json").read_text())
    assert results["builds_only"] is True
    (model,) = results["models"]
    assert set(model) == {"name", "builds"}
    assert model["builds"]["fp32_build_s"] is None
    assert model["builds"]["paths"]["tune"] == "refit"
    assert len(model["builds"]["load_average"]["before"]) == 3
    markdown = (out / "foundation.md").read_text()
    assert "Serving speed" not in markdown
    assert "weight-only update" in markdown
