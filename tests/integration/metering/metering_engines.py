"""Real engines for the metering and metrics integration tests: a tiny ONNX graph
(``y = x + c``, x[N,4]) saved to disk, loaded and validated by kiln, obtained through the engine
cache with kiln's ONNX Runtime backend, and loaded as a real ORT engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from kiln.cache.builder import BuildReport, obtain_engine
from kiln.cache.store import EngineStore
from kiln.compile.backends.base import Engine, LoadOptions
from kiln.compile.registry import create_backend
from kiln.compile.spec import BuildSpec
from kiln.model.load import load_model
from kiln.types import Array

WIDTH = 4


def add_model(constant: float) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH])
    c = helper.make_tensor("c", TensorProto.FLOAT, [WIDTH], [constant] * WIDTH)
    graph = helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "add", [x], [y], [c])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@dataclass(frozen=True)
class Obtained:
    engine: Engine
    report: BuildReport


class Engines:
    """Obtains ``add_model(c)`` engines through a real engine cache under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.backend = create_backend("onnxruntime")
        self.store = EngineStore(root / "engines")

    def obtain(self, constant: float) -> Obtained:
        path = self.root / "models" / f"add-{constant}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(add_model(constant), path)
        source = load_model(path)
        report = obtain_engine(source, BuildSpec(max_batch_size=16), self.backend, self.store)
        engine = self.backend.load(report.artifact, LoadOptions(intra_op_threads=1))
        return Obtained(engine, report)


def rows(n: int, seed: int = 0) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, WIDTH)).astype(np.float32)}
