from __future__ import annotations

import numpy as np
import pytest

from kiln.bench.efficiency import capacity_at
from kiln.bench.histogram import LatencyHistogram
from kiln.bench.results import StepResult
from kiln.gate.checks import (
    accuracy_check,
    accuracy_drop_check,
    build_time_check,
    compare,
    p99_check,
    signature_check,
    speedup_check,
)
from kiln.types import TensorSpec


def step(ok: int, p99_ms: float, errors: dict[str, int] | None = None) -> StepResult:
    histogram = LatencyHistogram()
    if ok:
        histogram.record_ns(round(p99_ms * 1e6), ok)
    return StepResult("100/s", "open", 1.0, ok, errors or {}, histogram, rate_per_s=100.0)


def test_compare_in_both_directions() -> None:
    assert compare("p99", 4.0, 5.0, "<=", "ms").status == "pass"
    assert compare("p99", 6.0, 5.0, "<=", "ms").status == "fail"
    assert compare("speedup", 3.0, 2.0, ">=", "x").status == "pass"
    failed = compare("speedup", 1.5, 2.0, ">=", "x")
    assert failed.status == "fail"
    assert failed.detail == "1.5 x, needs >= 2 x"


def test_an_unmeasured_or_infinite_value_fails() -> None:
    assert compare("p99", None, 5.0, "<=", "ms").status == "fail"
    assert compare("drop", float("inf"), 5.0, "<=", "drop").status == "fail"


def test_accuracy_drop_from_a_build_report() -> None:
    assert accuracy_drop_check("acc", {"drop": 0.001, "task": "ctr"}, 0.01).passed
    assert not accuracy_drop_check("acc", {"drop": 0.05}, 0.01).passed
    missing = accuracy_drop_check("acc", None, 0.01)
    assert missing.status == "fail"
    assert "not measured" in missing.detail


def test_accuracy_check_measures_outputs_against_a_reference() -> None:
    reference = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.8], [0.9, 0.1]])
    assert accuracy_check("vs served", reference, reference, task="classifier", max_drop=0.0).passed
    flipped = reference[:, ::-1]
    result = accuracy_check("vs served", reference, flipped, task="classifier", max_drop=0.1)
    assert result.status == "fail"
    assert result.measured == pytest.approx(1.0)


def test_p99_check_reports_a_step_where_every_request_failed() -> None:
    result = p99_check("p99", step(0, 0.0, {"InvalidInput": 40}), 10.0)
    assert result.status == "fail"
    assert result.measured is None
    assert "every request failed" in result.detail
    assert "InvalidInput x40" in result.detail


def test_p99_check_fails_on_partial_errors_even_within_the_bound() -> None:
    assert p99_check("p99", step(100, 2.0), 10.0).passed
    result = p99_check("p99", step(90, 2.0, {"Overloaded": 10}), 10.0)
    assert result.status == "fail"
    assert "10 of 100 requests failed" in result.detail


def test_speedup_check_says_which_side_has_no_step_within_the_bound() -> None:
    kiln = capacity_at("kiln", [step(900, 4.0)], 5.0)
    base = capacity_at("unoptimized", [step(300, 4.0)], 5.0)
    assert speedup_check("speedup", kiln, base, 2.0).measured == pytest.approx(3.0, rel=0.01)
    assert not speedup_check("speedup", kiln, base, 1000.0).passed  # an unreachable threshold
    slow = capacity_at("unoptimized", [step(300, 40.0)], 5.0)
    result = speedup_check("speedup", kiln, slow, 2.0)
    assert result.status == "fail"
    assert "unoptimized: no step with p99 <= 5 ms (best p99 40" in result.detail


def test_build_time() -> None:
    assert build_time_check("build", 3.0, 60.0, "hit").passed
    assert not build_time_check("build", 90.0, 60.0).passed


def test_signature_check_names_every_difference() -> None:
    served = ((TensorSpec("dense", "FP32", (-1, 13)), TensorSpec("sparse", "INT64", (-1, 26))),
              (TensorSpec("p", "FP32", (-1, 1)),))  # fmt: skip
    assert signature_check("sig", served, served).passed
    candidate = ((TensorSpec("dense", "FP32", (-1, 14)), TensorSpec("extra", "INT64", (-1, 1))),
                 (TensorSpec("p", "FP16", (-1, 1)),))  # fmt: skip
    result = signature_check("sig", candidate, served)
    assert result.status == "fail"
    assert "input 'dense' has shape [-1, 14], served [-1, 13]" in result.detail
    assert "input 'extra' is new" in result.detail
    assert "input 'sparse' is missing" in result.detail
    assert "output 'p' is FP16, served FP32" in result.detail
    assert result.measured == 4
