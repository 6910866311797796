"""Real engines for the runtime's integration tests: tiny ONNX graphs built with onnx.helper,
built and loaded by kiln's ONNX Runtime backend, wrapped only to count runs and open instances.

Graphs, batch axis first:

    add_model(c):     x[N,4] ──Add(c)──► y[N,4]             versions tell apart by c
    nan_model():      x[N,4] ──Add(NaN)──► y[N,4]           a broken retrain
    reshape_model():  x[N,4] ──Reshape([-1,3])──► y[N,3]    fails unless 4·N divides by 3
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from kiln.compile.artifact import write_manifest
from kiln.compile.backends.base import Engine, Instance, LoadOptions, prepares_per_shape
from kiln.compile.registry import create_backend
from kiln.compile.spec import BuildSpec
from kiln.model.source import Fingerprint, ModelSource
from kiln.types import Array, ShapeProfile, Tensors, TensorSpec

WIDTH = 4


def _model(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], out_width: int = WIDTH
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_width])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def add_model(constant: float) -> onnx.ModelProto:
    c = helper.make_tensor("c", TensorProto.FLOAT, [WIDTH], [constant] * WIDTH)
    return _model([helper.make_node("Add", ["x", "c"], ["y"])], [c])


def nan_model() -> onnx.ModelProto:
    return add_model(float("nan"))


def reshape_model() -> onnx.ModelProto:
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [-1, 3])
    return _model([helper.make_node("Reshape", ["x", "s"], ["y"])], [shape], out_width=3)


class CountingInstance:
    def __init__(self, inner: Instance, engine: CountingEngine) -> None:
        self._inner, self._engine = inner, engine

    def run(self, inputs: Tensors) -> dict[str, Array]:
        with self._engine.lock:
            self._engine.num_runs += 1
        return self._inner.run(inputs)

    def close(self) -> None:
        with self._engine.lock:
            self._engine.open_instances -= 1
        self._inner.close()


class CountingEngine:
    """A real backend engine that counts runs and open instances, and remembers being closed."""

    def __init__(self, inner: Engine) -> None:
        self._inner = inner
        self.lock = threading.Lock()
        self.num_runs = 0
        self.open_instances = 0
        self.closed = False

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inner.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._inner.outputs

    @property
    def profiles(self) -> tuple[ShapeProfile, ...]:
        return self._inner.profiles

    @property
    def max_batch_size(self) -> int:
        return self._inner.max_batch_size

    @property
    def prepares_per_shape(self) -> bool:
        return prepares_per_shape(self._inner)

    def create_instance(self) -> CountingInstance:
        instance = CountingInstance(self._inner.create_instance(), self)
        with self.lock:
            self.open_instances += 1
        return instance

    def memory_bytes(self) -> int:
        return self._inner.memory_bytes()

    def close(self) -> None:
        self.closed = True
        self._inner.close()


class EngineBuilder:
    """Builds a model into an artifact under ``root`` with the ONNX Runtime backend and loads it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._backend = create_backend("onnxruntime")
        self._ids = itertools.count()

    def __call__(self, model: onnx.ModelProto, *, max_batch_size: int = 64) -> CountingEngine:
        source = ModelSource(
            path=Path("model.onnx"),
            format="onnx",
            fingerprint=Fingerprint("test-structure", "test-weights", (("", 17),), 8),
            inputs=(TensorSpec("x", "FP32", (-1, WIDTH)),),
            outputs=tuple(
                TensorSpec(o.name, "FP32", (-1, o.type.tensor_type.shape.dim[1].dim_value))
                for o in model.graph.output
            ),
            size_bytes=model.ByteSize(),
            model=model,
        )
        spec = BuildSpec(max_batch_size=max_batch_size)
        out_dir = self.root / f"engine-{next(self._ids)}"
        output = self._backend.build(source, spec, out_dir)
        target = self._backend.target()
        artifact = write_manifest(
            out_dir,
            key=out_dir.name,
            source=source,
            spec=spec,
            target=target,
            output=output,
            build_seconds=0.0,
        )
        return CountingEngine(self._backend.load(artifact, LoadOptions(intra_op_threads=1)))


def rows(n: int, seed: int = 0) -> dict[str, Array]:
    """``n`` rows of input ``x``, distinct per seed."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, WIDTH)).astype(np.float32)}
