"""Real engines for the server's integration tests: models built by kiln's ONNX Runtime backend.

ctr (kiln.examples, size tiny):  dense FP32 [N,13], sparse INT64 [N,26] -> prob FP32 [N,1]
pair (onnx.helper):              a FP32 [N,4], b FP32 [N,4] -> sum = a + b, diff = a - b
text (onnx.helper):              s BYTES [N,2] -> t BYTES [N,2] (Identity on strings)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from kiln.compile.artifact import write_manifest
from kiln.compile.backends.base import Engine, EngineArtifact, LoadOptions
from kiln.compile.registry import create_backend
from kiln.compile.spec import BuildSpec
from kiln.errors import ModelNotFound, describe
from kiln.examples import make_model
from kiln.model.load import load_model
from kiln.repository.control import IndexEntry, IndexState
from kiln.runtime import Runtime, VersionHandle


def pair_model() -> onnx.ModelProto:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])
    total = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 4])
    diff = helper.make_tensor_value_info("diff", TensorProto.FLOAT, ["N", 4])
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Sub", ["a", "b"], ["diff"])]
    graph = helper.make_graph(nodes, "pair", [a, b], [total, diff])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def ctr_model() -> onnx.ModelProto:
    return make_model("ctr", size="tiny", seed=0)


class EngineBuilder:
    """Builds ONNX models into ONNX Runtime engine artifacts under ``root``; loads them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._backend = create_backend("onnxruntime")
        self._ids = itertools.count()

    def build(self, model: onnx.ModelProto, *, max_batch_size: int = 64) -> EngineArtifact:
        folder = self.root / f"model-{next(self._ids)}"
        folder.mkdir(parents=True)
        path = folder / "model.onnx"
        onnx.save(model, path)
        source = load_model(path)
        spec = BuildSpec(max_batch_size=max_batch_size)
        out_dir = folder / "engine"
        output = self._backend.build(source, spec, out_dir)
        target = self._backend.target()
        return write_manifest(
            out_dir,
            key=folder.name,
            source=source,
            spec=spec,
            target=target,
            output=output,
            build_seconds=0.0,
        )

    def factory(self, artifact: EngineArtifact) -> Callable[[], Engine]:
        """Loads a fresh engine from ``artifact`` each time it is called."""
        return partial(self._backend.load, artifact, LoadOptions(intra_op_threads=1))


_STATES: dict[str, IndexState] = {
    "READY": "READY",
    "FAILED": "FAILED",
    "LOADING": "LOADING",
    "WARMING": "LOADING",
}


class RuntimeControl:
    """A model repository stand-in: ``load`` puts the next version of a model (from the engine
    factory the test gave) into the real runtime, ``unload`` unloads it; the index is the runtime's."""

    def __init__(self, runtime: Runtime, factories: dict[str, Callable[[], Engine]]) -> None:
        self.runtime = runtime
        self.factories = factories
        self.versions = dict.fromkeys(factories, 0)
        self.handles: dict[str, VersionHandle] = {}

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        entries: list[IndexEntry] = []
        statuses = {s.name: s for s in self.runtime.status().models}
        for name in self.factories:
            status = statuses.get(name)
            latest = {v.version: v for v in (status.versions if status else ())}
            for v in latest.values():
                entries.append(
                    IndexEntry(name, v.version, _STATES.get(v.state, "UNAVAILABLE"), v.reason or "")
                )
            if not latest:
                entries.append(IndexEntry(name, "", "UNAVAILABLE"))
        return [e for e in entries if not ready_only or e.state == "READY"]

    def load(self, name: str) -> list[IndexEntry]:
        if name not in self.factories:
            raise ModelNotFound(describe(f"the repository has no model {name!r}"))
        self.versions[name] += 1
        version = str(self.versions[name])
        self.handles[name] = self.runtime.load_version(name, version, self.factories[name])
        return [IndexEntry(name, version, "LOADING")]

    def unload(self, name: str) -> list[IndexEntry]:
        if name not in self.factories:
            raise ModelNotFound(describe(f"the repository has no model {name!r}"))
        self.handles[name] = self.runtime.unload(name)
        return [IndexEntry(name, str(self.versions[name]), "UNLOADING")]
