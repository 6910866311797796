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
