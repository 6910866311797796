"""Accuracy metrics against hand-computed values, the drop bound, and the report's JSON."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kiln.compile.accuracy import (
    AccuracyReport,
    auc,
    average_ranks,
    check_accuracy,
    measure_accuracy,
    run_batches,
    spearman,
)
from kiln.compile.data import SampleSet
from kiln.errors import AccuracyError, BuildError, ConfigError
from kiln.types import Tensors


def test_average_ranks_share_ties() -> None:
    assert average_ranks(np.array([30, 10, 20, 20])).tolist() == [4.0, 1.0, 2.5, 2.5]
    assert average_ranks(np.array([5.0, 5.0, 5.0])).tolist() == [2.0, 2.0, 2.0]


def test_auc_by_hand() -> None:
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3 of 4
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    # ties count one half: positives 0.5, 0.9 vs negatives 0.2, 0.5 -> 1 + 0.5 + 1 + 1 = 3.5 of 4
    assert auc(np.array([0.2, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.875)
    assert auc(np.array([3.0, 2.0, 1.0]), np.array([1, 0, 0])) == 1.0


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ConfigError, match="both classes"):
        auc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_spearman_by_hand() -> None:
    # ranks [1..5] vs [1, 2, 3.5, 5, 3.5]: sum d_a d_b = 8, |d_a|^2 = 10, |d_b|^2 = 9.5
    rho = spearman(np.array([1, 2, 3, 4, 5]), np.array([5, 6, 7, 8, 7]))
    assert rho == pytest.approx(8 / math.sqrt(95))
    assert spearman(np.arange(6), -(np.arange(6) ** 3)) == pytest.approx(-1.0)
    assert spearman(np.ones(4), np.ones(4)) == 1.0
    assert spearman(np.ones(4), np.arange(4)) == 0.0


def test_none_task_reports_errors() -> None:
    ref = np.array([[3.0, 4.0]])
    cand = np.array([[3.0, 4.5]])
    report = measure_accuracy(ref, cand, task="none")
    assert report.max_abs_error == pytest.approx(0.5)
    assert report.rel_l2_error == pytest.approx(0.5 / 5.0)
    assert report.drop == report.rel_l2_error
    assert report.num_samples == 1


def test_classifier_top1_agreement() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    cand = np.array([[0.2, 0.8], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    report = measure_accuracy(ref, cand, task="classifier")
    assert report.top1_agreement == 0.75
    assert report.drop == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="C >= 2"):
        measure_accuracy(ref[:, :1], cand[:, :1], task="classifier")


def test_ctr_auc_delta() -> None:
    labels = np.array([0, 0, 1, 1])
    ref = np.array([[0.1], [0.4], [0.35], [0.8]])  # AUC 0.75
    cand = np.array([[0.1], [0.4], [0.45], [0.8]])  # AUC 1.0
    report = measure_accuracy(ref, cand, task="ctr", labels=labels)
    assert report.auc_reference == pytest.approx(0.75)
    assert report.auc_candidate == pytest.approx(1.0)
    assert report.drop == pytest.approx(-0.25)  # the candidate did better
    with pytest.raises(ConfigError, match="_label"):
        measure_accuracy(ref, cand, task="ctr")
    with pytest.raises(ConfigError, match="0/1"):
        measure_accuracy(ref, cand, task="ctr", labels=np.array([0, 2, 1, 1]))


def test_ranker_uses_spearman() -> None:
    ref = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
    cand = np.array([[5.0], [6.0], [7.0], [8.0], [7.0]])
    report = measure_accuracy(ref, cand, task="ranker")
    assert report.spearman == pytest.approx(8 / math.sqrt(95))
    assert report.drop == pytest.approx(1 - 8 / math.sqrt(95))


def test_non_finite_candidate_fails_every_bound() -> None:
    report = measure_accuracy(np.ones((3, 2)), np.array([[1.0, np.nan]] * 3), task="classifier")
    assert math.isinf(report.max_abs_error)
    assert report.drop == 1.0
    with pytest.raises(AccuracyError):
        check_accuracy(report, 0.5)
    none = measure_accuracy(np.ones(3), np.array([1.0, np.inf, 1.0]), task="none")
    assert math.isinf(none.drop)
    with pytest.raises(AccuracyError):
        check_accuracy(none, 1e9)


def test_shape_mismatch_is_a_build_error() -> None:
    with pytest.raises(BuildError, match="shape"):
        measure_accuracy(np.ones((4, 2)), np.ones((4, 3)), task="none")


def test_check_accuracy_names_metric_value_bound_and_fixes() -> None:
    report = measure_accuracy(
        np.array([[0.1], [0.4], [0.35], [0.8]]),
        np.array([[0.1], [0.4], [0.05], [0.8]]),
        task="ctr",
        labels=np.array([0, 0, 1, 1]),
    )
    check_accuracy(report, None)
    check_accuracy(report, 0.5)
    with pytest.raises(AccuracyError) as info:
        check_accuracy(report, 0.01)
    message = str(info.value)
    assert "AUC 0.5" in message
    assert "fp32 reference AUC 0.75" in message
    assert "max_accuracy_drop 0.01" in message
    for hint in ("--precision fp16", "--keep-fp32", "--per-channel", "--calibration-method"):
        assert hint in message


def test_report_json_round_trip() -> None:
    report = measure_accuracy(np.array([[1.0], [2.0]]), np.array([[1.0], [2.5]]), task="ranker")
    data = report.to_json()
    assert data["task"] == "ranker"
    assert data["spearman"] == 1.0
    assert data["top1_agreement"] is None
    assert AccuracyReport.from_json(data) == report
    broken = AccuracyReport("none", 3, math.inf, math.inf, math.inf)
    assert broken.to_json()["drop"] is None
    assert math.isinf(AccuracyReport.from_json(broken.to_json()).drop)


def test_run_batches_concatenates_outputs() -> None:
    seen: list[int] = []

    def run(inputs: Tensors) -> dict[str, np.ndarray]:
        seen.append(len(inputs["x"]))
        return {"double": inputs["x"] * 2, "first": inputs["x"][:, :1]}

    out = run_batches(run, SampleSet({"x": np.arange(14).reshape(7, 2)}), batch_size=3)
    assert seen == [3, 3, 1]
    assert out["double"].tolist() == (np.arange(14).reshape(7, 2) * 2).tolist()
    assert out["first"].shape == (7, 1)
