"""A small test-only adapter from a real ``onnxruntime.InferenceSession`` to kiln's Engine/Instance
interfaces, and tiny ONNX graphs built with onnx.helper. (The production ONNX Runtime backend lives
in ``kiln.compile.backends.onnxruntime``; this adapter only serves the runtime's own tests.)

Graphs, batch axis first:

    add_model(c):      x[N,W] ──Add(c)──► y[N,W]            versions tell apart by c
    nan_model():       x[N,W] ──Add(NaN)──► y[N,W]          a broken retrain
    fixed_batch_model: x[N,W] ──Reshape([1,W])──► y[N,W]    declares a batch axis, fails for any
                                                            batch but 1 (a broken export)
"""

from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from kiln.errors import EngineFailed, InvalidInput
from kiln.types import Array, DataType, ShapeProfile, Tensors, TensorSpec

WIDTH = 4
_DATATYPES: dict[int, DataType] = {
    TensorProto.FLOAT: "FP32",
    TensorProto.INT64: "INT64",
    TensorProto.DOUBLE: "FP64",
}


def _graph(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def add_model(constant: float) -> onnx.ModelProto:
    c = helper.make_tensor("c", TensorProto.FLOAT, [WIDTH], [constant] * WIDTH)
    return _graph([helper.make_node("Add", ["x", "c"], ["y"])], [c])


def nan_model() -> onnx.ModelProto:
    return add_model(float("nan"))


def fixed_batch_model() -> onnx.ModelProto:
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [1, WIDTH])
    return _graph([helper.make_node("Reshape", ["x", "s"], ["y"])], [shape])


class OrtInstance:
    def __init__(self, engine: OrtEngine) -> None:
        self._engine = engine
        self._options = ort.RunOptions()

    def run(self, inputs: Tensors) -> dict[str, Array]:
        session = self._engine.session
        if session is None:
            raise EngineFailed("the engine was closed")
        try:
            values = session.run(None, dict(inputs), self._options)
        except (ort.capi.onnxruntime_pybind11_state.InvalidArgument, ValueError) as exc:
            raise InvalidInput(str(exc)) from exc
        except ort.capi.onnxruntime_pybind11_state.Fail as exc:
            raise EngineFailed(str(exc)) from exc
        with self._engine.lock:
            self._engine.num_runs += 1
        return {spec.name: value for spec, value in zip(self._engine.outputs, values, strict=True)}

    def close(self) -> None:
        with self._engine.lock:
            self._engine.open_instances -= 1


class OrtEngine:
    """One resident InferenceSession (weights once); instances share it, each with its own
    RunOptions. Counts runs and open instances so tests can prove the engine was (not) called."""

    def __init__(self, model: onnx.ModelProto, *, max_batch_size: int = 64) -> None:
        self._bytes = model.SerializeToString()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session: ort.InferenceSession | None = ort.InferenceSession(
            self._bytes, options, providers=["CPUExecutionProvider"]
        )
        self.inputs = tuple(_spec(v) for v in model.graph.input)
        self.outputs = tuple(_spec(v) for v in model.graph.output)
        self.profiles: tuple[ShapeProfile, ...] = ()
        self.max_batch_size = max_batch_size
        self.lock = threading.Lock()
        self.num_runs = 0
        self.open_instances = 0
        self.closed = False

    def create_instance(self) -> OrtInstance:
        if self.session is None:
            raise EngineFailed("the engine was closed")
        with self.lock:
            self.open_instances += 1
        return OrtInstance(self)

    def memory_bytes(self) -> int:
        return len(self._bytes)

    def close(self) -> None:
        self.session = None
        self.closed = True


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    """The signature the model declares (named dims such as ``N`` are variable: -1)."""
    tensor = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return TensorSpec(value.name, _DATATYPES[tensor.elem_type], shape)


def rows(n: int, seed: int = 0) -> dict[str, Array]:
    """``n`` rows of input ``x``, distinct per seed."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, WIDTH)).astype(np.float32)}
