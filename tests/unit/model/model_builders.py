"""Tiny ONNX models built inline with onnx.helper, and a fake backend op coverage, for model tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_model(
    *,
    opset: int = 17,
    input_shape: Sequence[int | str | None] = ("batch", 3),
    output_shape: Sequence[int | str | None] = ("batch", 3),
    nodes: Sequence[onnx.NodeProto] | None = None,
    weights: np.ndarray | None = None,
) -> onnx.ModelProto:
    """``y = Relu(x + w)`` with ``x: [batch, 3]`` and an initializer ``w: [3]``."""
    w = numpy_helper.from_array(
        weights if weights is not None else np.array([0.5, -1.0, 2.0], np.float32), "w"
    )
    graph = helper.make_graph(
        list(nodes)
        if nodes is not None
        else [
            helper.make_node("Add", ["x", "w"], ["s"], name="add"),
            helper.make_node("Relu", ["s"], ["y"], name="relu"),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_shape))],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def two_weight_model() -> onnx.ModelProto:
    """``y = (x + a) * b`` with two initializers, for external-data tests."""
    a = numpy_helper.from_array(np.arange(4, dtype=np.float32), "a")
    b = numpy_helper.from_array(np.full(4, 3.0, np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "a"], ["s"], name="add"),
            helper.make_node("Mul", ["s", "b"], ["y"], name="mul"),
        ],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [a, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def make_external(model: onnx.ModelProto, tensor_name: str, location: str, offset: int = 0) -> bytes:
    """Point initializer ``tensor_name`` at ``location`` (no check, no file written); return its bytes."""
    for tensor in model.graph.initializer:
        if tensor.name == tensor_name:
            data = numpy_helper.to_array(tensor).tobytes()
            tensor.ClearField("raw_data")
            tensor.ClearField("float_data")
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(data)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            return data
    raise KeyError(tensor_name)


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


@dataclass(frozen=True)
class FakeOpSupport:
    """A backend that runs every operator except those in ``refused`` (op type names)."""

    refused: frozenset[str] = frozenset()

    def unsupported(self, domain: str, op_type: str, opset: int) -> str | None:
        if op_type in self.refused:
            return f"the fake backend has no {op_type}; replace it or choose another backend"
        return None


def shape_inputs_model(*, out_width: int = 6) -> onnx.ModelProto:
    """Opset 18, every operator whose shape inference reads an initializer's values: ``Reshape``
    (shape), ``Slice`` (starts/ends/axes), ``Unsqueeze`` and ``ReduceSum`` (axes), ``ConstantOfShape``
    (its shape). ``w`` (80 KiB) is larger than what the loader reads before validating.
    ``out_width`` is the output's declared last dim (6 is right)."""
    ints = {
        "shape": [-1, 10, 16],
        "starts": [2],
        "ends": [8],
        "slice_axes": [1],
        "unsqueeze_axes": [1],
        "sum_axes": [3],
        "ones_shape": [1, 6],
    }
    initializers = [numpy_helper.from_array(np.array(v, np.int64), name) for name, v in ints.items()]
    weight = np.random.default_rng(0).standard_normal((128, 160)).astype(np.float32)
    initializers.append(numpy_helper.from_array(weight, "w"))
    one = numpy_helper.from_array(np.array([1.0], np.float32), "one")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Reshape", ["h", "shape"], ["r"], name="reshape"),
        helper.make_node("Slice", ["r", "starts", "ends", "slice_axes"], ["s"], name="slice"),
        helper.make_node("Unsqueeze", ["s", "unsqueeze_axes"], ["u"], name="unsqueeze"),
        helper.make_node("ReduceSum", ["u", "sum_axes"], ["t"], name="reduce_sum", keepdims=0),
        helper.make_node("ConstantOfShape", ["ones_shape"], ["ones"], name="ones", value=one),
        helper.make_node("Add", ["t", "ones"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "shape_inputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, out_width])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def save_all_external(model: onnx.ModelProto, path: Path, location: str = "model.onnx.data") -> Path:
    """Save ``model`` with every tensor in one external data file, as
    ``onnx.save_model(..., save_as_external_data=True, size_threshold=0)`` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path
