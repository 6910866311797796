"""``kiln demo`` on the tiny examples: every engine built through the cache, the retrained models
taking the weight-only update path, and a second run served from the cache."""

from __future__ import annotations

import json
from pathlib import Path

from build_helpers import kiln

from kiln.cache.store import EngineStore


def test_demo_builds_then_serves_from_the_cache(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    outcome = kiln(["demo", "--dir", str(work), "--size", "tiny", "--json", "--no-serve"])
    assert outcome.exit_code == 0, outcome.stderr
    rows = json.loads(outcome.stdout)

    assert [r["step"] for r in rows[:3]] == [
        "ctr fp32, seed 0",
        "ctr int8, seed 0",
        "ctr int8, retrained (seed 1)",
    ]
    assert [r["precision"] for r in rows] == ["fp32", "int8", "int8"] * 3
    assert [r["path"] for r in rows[0::3]] == ["build"] * 3
    assert [r["path"] for r in rows[1::3]] == ["build"] * 3
    assert {r["path"] for r in rows[2::3]} <= {"refit", "calibration-reuse", "recalibrate"}
    assert all(r["accuracy"]["samples_from"] == "validation" for r in rows)
    assert all(r["accuracy"]["drop"] <= r["accuracy"]["max_accuracy_drop"] for r in rows[1::3])
    assert len(EngineStore(work / "engines").list_entries()) == 9
    for name in ("ctr", "cnn", "ranker"):  # the example repository, written but not served
        assert (work / "repo" / name / "1" / "model.onnx").is_file()
        assert (work / "repo" / name / "1" / "READY").is_file()
        assert (work / "repo" / name / "config.yaml").is_file()

    again = kiln(["demo", "--dir", str(work), "--size", "tiny", "--no-serve"])

    assert again.exit_code == 0, again.stderr
    table = [line for line in again.stdout.splitlines() if line.startswith("│")]
    assert len(table) == 9
    assert all(line.split("│")[4].strip() == "hit" for line in table)
    assert "every engine is a cache hit" in again.stdout


def test_demo_refuses_an_unknown_example(tmp_path: Path) -> None:
    outcome = kiln(["demo", "--dir", str(tmp_path), "--only", "gpt", "--no-serve"])
    assert outcome.exit_code == 2
    assert "unknown example model" in outcome.stderr
    assert "(seen: gpt)" in outcome.stderr
