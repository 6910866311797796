"""The fp32 reference: the source model run by ONNX Runtime with optimizations off."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.compile.data import SampleSet
from kiln.compile.reference import reference_outputs
from kiln.errors import BuildError


def affine() -> object:
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_outputs_are_the_model_applied_batch_by_batch() -> None:
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    seen: list[tuple[str, int, int]] = []

    outputs = reference_outputs(
        affine(), SampleSet({"x": x}), batch_size=4, progress=lambda *a: seen.append(a), threads=1
    )

    expected = np.maximum(x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10), 0)
    np.testing.assert_allclose(outputs["y"], expected, rtol=1e-6)
    assert seen == [("fp32 reference", 1, 3), ("fp32 reference", 2, 3), ("fp32 reference", 3, 3)]


def test_samples_the_model_refuses_are_a_build_error() -> None:
    with pytest.raises(BuildError, match="fp32 reference model failed on the samples"):
        reference_outputs(affine(), SampleSet({"x": np.zeros((2, 5), np.float32)}), batch_size=2)
