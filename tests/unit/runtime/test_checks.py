from __future__ import annotations

import numpy as np
import pytest

from kiln.errors import ConfigError
from kiln.runtime.checks import GoldenSet, check_outputs, compare_golden, is_batchable, warmup_batch
from kiln.types import ShapeProfile, TensorSpec

Y = (TensorSpec("y", "FP32", (-1, 4)),)


def test_good_outputs_have_no_problems() -> None:
    assert check_outputs(Y, {"y": np.zeros((2, 4), np.float32)}, 2, check_finite=True) == []


def test_every_kind_of_bad_output_is_named() -> None:
    problems = check_outputs(Y, {"z": np.zeros(1)}, 2, check_finite=True)
    assert any("unexpected output 'z'" in p for p in problems)
    assert any("'y' is missing" in p for p in problems)
    assert check_outputs(Y, {"y": np.zeros((2, 4), np.float64)}, 2, check_finite=True) == [
        "output 'y' has datatype FP64, declared FP32"
    ]
    assert "shape [2, 5]" in check_outputs(Y, {"y": np.zeros((2, 5), np.float32)}, 2, check_finite=True)[0]
    assert (
        "3 rows for a batch of 2"
        in check_outputs(Y, {"y": np.zeros((3, 4), np.float32)}, 2, check_finite=True)[0]
    )


def test_nan_and_inf_are_found_unless_the_check_is_off() -> None:
    bad = np.zeros((1, 4), np.float32)
    bad[0, 2] = np.inf
    assert check_outputs(Y, {"y": bad}, 1, check_finite=True) == ["output 'y' holds NaN or Inf"]
    assert check_outputs(Y, {"y": bad}, 1, check_finite=False) == []


def test_golden_set_within_tolerance() -> None:
    golden = GoldenSet(
        {"x": np.zeros((1, 4), np.float32)}, {"y": np.ones((1, 4), np.float32)}, rtol=0, atol=1e-3
    )
    assert compare_golden(golden, {"y": np.full((1, 4), 1.0005, np.float32)}) == []
    problems = compare_golden(golden, {"y": np.full((1, 4), 1.1, np.float32)})
    assert "differs in 4 of 4 values" in problems[0]
    assert "missing" in compare_golden(golden, {})[0]


def test_golden_set_needs_outputs_and_sane_tolerances() -> None:
    with pytest.raises(ConfigError):
        GoldenSet({}, {})
    with pytest.raises(ConfigError):
        GoldenSet({}, {"y": np.zeros(1)}, rtol=-1)


def test_warmup_batches_fill_variable_dims_from_the_profile() -> None:
    specs = (TensorSpec("ids", "INT64", (-1, -1)), TensorSpec("dense", "FP32", (-1, 13)))
    profiles = (ShapeProfile("ids", (1, 1), (4, 7), (32, 16)),)
    feed = warmup_batch(specs, profiles, 8)
    assert feed["ids"].shape == (8, 7)
    assert feed["ids"].dtype == np.int64
    assert feed["dense"].shape == (8, 13)
    assert not feed["dense"].any()


def test_batchable_needs_a_variable_first_axis_everywhere() -> None:
    assert is_batchable((TensorSpec("x", "FP32", (-1, 4)),), Y)
    assert not is_batchable((TensorSpec("x", "FP32", (1, 4)),), Y)
