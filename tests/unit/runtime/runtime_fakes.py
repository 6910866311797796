"""Hand-written fakes of kiln's Engine/Instance interfaces for the runtime's unit tests.

``FakeEngine(c)`` computes ``y = x + c`` on ``x[N, 4]`` float32, can hold a big numpy buffer as its
"weights" (so tests can see memory come and go), counts runs and open instances, and can be told to
fail: when creating an instance, or on runs (with a given exception), or to block on a gate.
``prepares_per_shape`` is declared only when given.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np

from kiln.types import Array, ShapeProfile, Tensors, TensorSpec

WIDTH = 4


class FakeInstance:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.closed = False

    def run(self, inputs: Tensors) -> dict[str, Array]:
        engine = self.engine
        with engine.lock:
            engine.num_runs += 1
            engine.threads.add(threading.current_thread().name)
            error = engine.run_errors.pop(0) if engine.run_errors else None
        if engine.gate is not None and not engine.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        if error is not None:
            raise error
        if engine.output_fn is not None:
            return engine.output_fn(inputs)
        return {"y": (inputs["x"] + engine.constant).astype(np.float32)}

    def close(self) -> None:
        self.closed = True
        with self.engine.lock:
            self.engine.open_instances -= 1


class FakeEngine:
    def __init__(
        self,
        constant: float = 0.0,
        *,
        weights_bytes: int = 0,
        max_batch_size: int = 64,
        create_errors: list[Exception] | None = None,
        output_fn: Callable[[Tensors], dict[str, Array]] | None = None,
        inputs: tuple[TensorSpec, ...] | None = None,
        outputs: tuple[TensorSpec, ...] | None = None,
        profiles: tuple[ShapeProfile, ...] = (),
        prepares_per_shape: bool | None = None,
    ) -> None:
        if prepares_per_shape is not None:  # None: declares nothing, like an engine without the property
            self.prepares_per_shape = prepares_per_shape
        self.constant = constant
        self.weights: Array | None = np.ones(weights_bytes // 8) if weights_bytes else None
        self.max_batch_size = max_batch_size
        self.inputs = inputs or (TensorSpec("x", "FP32", (-1, WIDTH)),)
        self.outputs = outputs or (TensorSpec("y", "FP32", (-1, WIDTH)),)
        self.profiles = profiles
        self.output_fn = output_fn
        self.create_errors = list(create_errors or [])
        self.run_errors: list[Exception] = []
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()
        self.num_runs = 0
        self.num_created = 0
        self.open_instances = 0
        self.threads: set[str] = set()
        self.closed = False

    def create_instance(self) -> FakeInstance:
        with self.lock:
            if self.create_errors:
                raise self.create_errors.pop(0)
            self.num_created += 1
            self.open_instances += 1
        return FakeInstance(self)

    def memory_bytes(self) -> int:
        return 0 if self.weights is None else int(self.weights.nbytes)

    def close(self) -> None:
        self.weights = None
        self.closed = True


def x_rows(n: int, start: float = 0.0) -> dict[str, Array]:
    values = np.arange(start, start + n * WIDTH, dtype=np.float32).reshape(n, WIDTH)
    return {"x": values}


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait (yielding to the loop) until ``predicate()`` holds; fail after ``timeout_s``."""
    give_up = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.001)
