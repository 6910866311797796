"""Hand-written fakes for the server's unit tests: engines that compute in numpy, and a model
repository (``ModelControl``) kept in memory.

    pair:  a FP32 [N,4], b FP32 [N,4] -> sum = a + b, diff = a - b
    text:  s BYTES [N,2] -> t BYTES [N,2] (upper-cased)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from kiln.errors import ModelNotFound, describe
from kiln.repository.control import IndexEntry, IndexState
from kiln.runtime import BatchingConfig, ModelConfig, Runtime
from kiln.types import Array, ShapeProfile, Tensors, TensorSpec

Compute = Callable[[Tensors], dict[str, Array]]


def _pair(inputs: Tensors) -> dict[str, Array]:
    return {"sum": inputs["a"] + inputs["b"], "diff": inputs["a"] - inputs["b"]}


def _text(inputs: Tensors) -> dict[str, Array]:
    upper = np.vectorize(lambda item: bytes(item).upper(), otypes=[object])
    return {"t": upper(inputs["s"])}


PAIR = (
    (TensorSpec("a", "FP32", (-1, 4)), TensorSpec("b", "FP32", (-1, 4))),
    (TensorSpec("sum", "FP32", (-1, 4)), TensorSpec("diff", "FP32", (-1, 4))),
    _pair,
)
TEXT = ((TensorSpec("s", "BYTES", (-1, 2)),), (TensorSpec("t", "BYTES", (-1, 2)),), _text)


class FakeInstance:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def run(self, inputs: Tensors) -> dict[str, Array]:
        gate = self.engine.gate
        if gate is not None and not gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        return self.engine.compute(inputs)

    def close(self) -> None:
        pass


class FakeEngine:
    """An Engine computing ``compute`` in numpy; ``gate`` (when set) holds every run until opened."""

    def __init__(self, kind: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], Compute] = PAIR) -> None:
        self.inputs, self.outputs, self.compute = kind
        self.profiles: tuple[ShapeProfile, ...] = ()
        self.max_batch_size = 64
        self.gate: threading.Event | None = None

    def create_instance(self) -> FakeInstance:
        return FakeInstance(self)

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


def make_runtime(*models: str, max_batch_size: int = 8) -> Runtime:
    """A Runtime serving version "1" of each named model ("pair" or "text") on fake engines."""
    runtime = Runtime()
    kinds = {"pair": PAIR, "text": TEXT}
    config = ModelConfig(batching=BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_us=0))
    for name in models:
        runtime.add_model(name, config)
        status = runtime.load_version(name, "1", FakeEngine(kinds[name])).result(30)
        assert status.state == "READY", status
    return runtime


class FakeControl:
    """A model repository in memory: an index the test sets, and the load/unload calls it got."""

    def __init__(self, entries: list[IndexEntry] | None = None) -> None:
        self.entries = list(entries or [])
        self.calls: list[tuple[str, str]] = []

    def set_state(self, name: str, version: str, state: IndexState, reason: str = "") -> None:
        self.entries = [e for e in self.entries if (e.name, e.version) != (name, version)]
        self.entries.append(IndexEntry(name, version, state, reason))

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        return [e for e in self.entries if not ready_only or e.state == "READY"]

    def _known(self, name: str) -> list[IndexEntry]:
        found = [e for e in self.entries if e.name == name]
        if not found:
            raise ModelNotFound(describe(f"the repository has no model {name!r}"))
        return found

    def load(self, name: str) -> list[IndexEntry]:
        found = self._known(name)
        self.calls.append(("load", name))
        return [IndexEntry(e.name, e.version, "LOADING") for e in found]

    def unload(self, name: str) -> list[IndexEntry]:
        found = self._known(name)
        self.calls.append(("unload", name))
        return [IndexEntry(e.name, e.version, "UNLOADING") for e in found]
