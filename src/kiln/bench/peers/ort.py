"""ONNX Runtime as the peers deploy it, and the ``unoptimized`` baseline as an in-process target.

* :func:`create_session` — a plain ``InferenceSession`` on the CPU: graph optimizations on
  (``ORT_ENABLE_ALL``, what a hand-written deployment gets by default) or off (the baseline).
* :class:`UnoptimizedTarget` — the source model in fp32, graph optimizations off, one request per
  run on one thread, no batching: the "framework as deployed" baseline kiln's efficiency factor
  is measured against.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kiln.bench.results import Reply, ServerCounters
from kiln.model.load import load_model, runtime_input
from kiln.types import Array, Tensors, TensorSpec

UNOPTIMIZED_THREADS = 2
"""Intra-op threads of the baseline session (ONNX Runtime's defaults otherwise)."""


def create_session(model: Path, *, optimized: bool, intra_op_threads: int = 0) -> Any:
    """An ONNX Runtime CPU session of ``model``; ``intra_op_threads`` 0 = ONNX Runtime's choice.

    External data is read under kiln's rules (``kiln.model.load.runtime_input``), so a model saved
    with every tensor external opens too; ``ModelError`` when its external data is refused.
    """
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimized else level.ORT_DISABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(runtime_input(model), options, providers=["CPUExecutionProvider"])


def signature(model: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's inputs and outputs as kiln names them (``-1`` for dynamic dimensions)."""
    source = load_model(model)
    return source.inputs, source.outputs


def run_session(session: Any, inputs: Tensors) -> dict[str, Array]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs)), strict=True))


class UnoptimizedTarget:
    """The baseline in-process: one request per run, one worker thread, no batching."""

    def __init__(self, model: Path, *, intra_op_threads: int = UNOPTIMIZED_THREADS) -> None:
        self.model = Path(model)
        self.intra_op_threads = intra_op_threads
        self._session: Any = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="kiln-bench-unoptimized")

    @property
    def description(self) -> str:
        return f"unoptimized {self.model.name} (fp32, graph optimizations off, one request per run)"

    async def open(self) -> tuple[TensorSpec, ...]:
        loop = asyncio.get_running_loop()
        inputs, _ = await loop.run_in_executor(self._executor, signature, self.model)
        self._session = await loop.run_in_executor(
            self._executor,
            lambda: create_session(self.model, optimized=False, intra_op_threads=self.intra_op_threads),
        )
        return inputs

    async def infer(self, inputs: Tensors) -> Reply:
        submitted = time.perf_counter_ns()
        loop = asyncio.get_running_loop()
        started, finished = await loop.run_in_executor(self._executor, self._run, inputs)
        return Reply(queue_ns=started - submitted, compute_ns=finished - started)

    def _run(self, inputs: Tensors) -> tuple[int, int]:
        started = time.perf_counter_ns()
        run_session(self._session, inputs)
        return started, time.perf_counter_ns()

    async def counters(self) -> ServerCounters | None:
        return None

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        self._session = None
