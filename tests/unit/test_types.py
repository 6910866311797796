from __future__ import annotations

import numpy as np
import pytest

from kiln.errors import InvalidInput
from kiln.model.signature import check_inputs
from kiln.types import ShapeProfile, TensorSpec, datatype_of, numpy_dtype


def test_datatype_names_round_trip() -> None:
    for name in ("FP32", "INT64", "UINT8", "BOOL", "FP16"):
        assert datatype_of(numpy_dtype(name)) == name


def test_unknown_datatype_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="FP32"):
        numpy_dtype("FLOAT")


def test_profile_refuses_min_over_max() -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile("x", (8, 3), (4, 3), (16, 3))


def test_check_inputs_names_every_problem() -> None:
    specs = [TensorSpec("dense", "FP32", (-1, 13)), TensorSpec("ids", "INT64", (-1, 26))]
    bad = {"dense": np.zeros((2, 12), np.float32), "extra": np.zeros(1, np.float32)}
    with pytest.raises(InvalidInput) as info:
        check_inputs(specs, bad)
    text = str(info.value)
    assert "unknown input 'extra'" in text
    assert "missing input 'ids'" in text
    assert "shape [2, 12]" in text


def test_check_inputs_enforces_profile() -> None:
    specs = [TensorSpec("x", "FP32", (-1, 4))]
    profile = ShapeProfile("x", (1, 4), (8, 4), (16, 4))
    check_inputs(specs, {"x": np.zeros((16, 4), np.float32)}, [profile])
    with pytest.raises(InvalidInput, match="outside the engine's profile"):
        check_inputs(specs, {"x": np.zeros((17, 4), np.float32)}, [profile])


def test_check_inputs_refuses_nonfinite_when_asked() -> None:
    specs = [TensorSpec("x", "FP32", (-1, 2))]
    value = {"x": np.array([[1.0, np.nan]], np.float32)}
    check_inputs(specs, value)
    with pytest.raises(InvalidInput, match="NaN"):
        check_inputs(specs, value, allow_nonfinite=False)
