"""``kiln build`` end to end on the tiny examples with real ONNX Runtime engines: accuracy numbers
for int8 and fp16, a hit on the second build, the weight-only update reusing the stored
calibration, and the fallback to a full recalibration when the reused ranges fail the check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from build_helpers import Example, kiln

from kiln.cache.store import EngineStore
from kiln.examples import EXAMPLES

FIGURE = {"ctr": "auc_candidate", "cnn": "top1_agreement", "ranker": "spearman"}


def build_json(args: list[str], cache_dir: Path) -> dict[str, object]:
    outcome = kiln([*args, "--json", "--cache-dir", str(cache_dir)])
    assert outcome.exit_code == 0, outcome.stderr
    report: dict[str, object] = json.loads(outcome.stdout)
    return report


def accuracy(report: dict[str, object]) -> dict[str, float]:
    data = report["accuracy"]
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", ["ctr", "cnn", "ranker"])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_converted_engines_report_accuracy_against_fp32(
    examples: dict[str, Example], cache_dir: Path, name: str, precision: str
) -> None:
    report = build_json(examples[name].args("--precision", precision), cache_dir)

    assert report["path"] == "build"
    assert report["precision"] == precision
    found = accuracy(report)
    assert found["task"] == EXAMPLES[name].task
    assert found["samples_from"] == "validation"
    assert found["num_samples"] == EXAMPLES[name].num_validation
    assert found["max_abs_error"] > 0
    assert 0 < found["rel_l2_error"] < (0.02 if precision == "fp16" else 1.5)
    figure = found[FIGURE[name]]
    assert 0.0 <= figure <= 1.0
    if name == "ctr":
        assert found["drop"] == pytest.approx(found["auc_reference"] - figure)
    else:
        assert found["drop"] == pytest.approx(1.0 - figure)
    if precision == "fp16":
        assert found["drop"] < 0.05
    assert isinstance(report["engine_size_bytes"], int)
    assert report["engine_size_bytes"] > 0
    assert (Path(str(report["artifact"])) / "engine.onnx").is_file()


def test_the_second_build_is_a_hit(examples: dict[str, Example], cache_dir: Path) -> None:
    args = examples["cnn"].args("--precision", "int8", "--per-channel")
    first = build_json(args, cache_dir)

    outcome = kiln([*args, "--cache-dir", str(cache_dir)])

    assert outcome.exit_code == 0, outcome.stderr
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in outcome.stdout.splitlines()
        if "│" in line
    }
    assert rows["path taken"] == "hit"
    assert rows["model"] == "cnn (int8)"
    assert rows["accuracy vs fp32"].startswith("top-1 agreement ")
    again = build_json(args, cache_dir)
    assert again["path"] == "hit"
    assert again["artifact"] == first["artifact"]
    assert again["accuracy"] == first["accuracy"]
    assert len(EngineStore(cache_dir).list_entries()) == 1


def test_a_weight_only_update_reuses_the_stored_calibration(
    examples: dict[str, Example], cache_dir: Path
) -> None:
    example = examples["ranker"]
    first = build_json(example.args("--precision", "int8"), cache_dir)

    update = build_json(
        example.args("--precision", "int8", model=example.retrained, validation=example.retrained_validation),
        cache_dir,
    )

    assert update["path"] == "calibration-reuse"
    assert update["key"] == first["key"]
    assert update["weights_hash"] != first["weights_hash"]
    # checked again, screened on a quarter of the validation samples (it passes clearly)
    assert accuracy(update)["num_samples"] == EXAMPLES["ranker"].num_validation // 4
    old, new = (Path(str(r["artifact"])) / "calibration.json" for r in (first, update))
    assert json.loads(new.read_text())["ranges"] == json.loads(old.read_text())["ranges"]
    assert len(EngineStore(cache_dir).list_entries()) == 2


def test_a_failed_reuse_check_falls_back_to_a_full_recalibration(
    examples: dict[str, Example], cache_dir: Path
) -> None:
    """The seed-0 min/max ranges cost the seed-1 model about 0.1 AUC, its own ranges about 0.01:
    a bound of 0.05 refuses the reused ranges and accepts the recalibrated engine."""
    example = examples["ctr"]
    first = build_json(example.args("--precision", "int8"), cache_dir)
    args = example.args(
        "--precision",
        "int8",
        "--max-accuracy-drop",
        "0.05",
        model=example.retrained,
        validation=example.retrained_validation,
    )

    outcome = kiln([*args, "--json", "--cache-dir", str(cache_dir)])

    assert outcome.exit_code == 0, outcome.stderr
    update = json.loads(outcome.stdout)
    assert update["path"] == "recalibrate"
    assert "failed its accuracy check" in outcome.stderr
    assert accuracy(update)["drop"] <= 0.05
    old, new = (Path(str(r["artifact"])) / "calibration.json" for r in (first, update))
    assert json.loads(new.read_text())["ranges"] != json.loads(old.read_text())["ranges"]


def test_a_hit_is_held_to_a_stricter_bound(examples: dict[str, Example], cache_dir: Path) -> None:
    args = examples["cnn"].args("--precision", "int8")
    build_json(args, cache_dir)

    outcome = kiln([*args, "--max-accuracy-drop", "0", "--cache-dir", str(cache_dir)])

    assert outcome.exit_code == 2
    assert "cached engine" in outcome.stderr
    assert "above max_accuracy_drop 0" in outcome.stderr
    assert len(EngineStore(cache_dir).list_entries()) == 1  # the engine stays for looser bounds


def test_without_samples_accuracy_is_not_measured(examples: dict[str, Example], cache_dir: Path) -> None:
    model = str(examples["ctr"].model)
    outcome = kiln(["build", model, "--precision", "fp16", "--cache-dir", str(cache_dir)])
    assert outcome.exit_code == 0, outcome.stderr
    assert "not measured (no validation or calibration data)" in outcome.stdout
    assert build_json(["build", model, "--precision", "fp16"], cache_dir)["accuracy"] is None


def test_without_validation_the_calibration_samples_are_used(
    examples: dict[str, Example], cache_dir: Path
) -> None:
    example = examples["ranker"]
    report = build_json(
        ["build", str(example.model), "--precision", "fp16", "--calibration", str(example.calibration)],
        cache_dir,
    )
    assert accuracy(report)["samples_from"] == "calibration"
    assert accuracy(report)["num_samples"] == 512
