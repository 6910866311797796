"""A loaded ONNX Runtime engine (one resident session) and its instances.

One ``InferenceSession`` holds the weights once. ONNX Runtime allows concurrent ``run`` calls on a
session, so an instance is only its own ``RunOptions`` and a reference to the engine: creating one
costs microseconds. Each instance is driven by one runner thread; several instances run at once.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from kiln.compile.backends.onnxruntime_session import ThreadPlan
from kiln.errors import BuildError, EngineFailed, InvalidInput, KilnError, NotReady, describe
from kiln.model.signature import check_inputs
from kiln.types import Array, DataType, ShapeProfile, Tensors, TensorSpec

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

_ORT_TYPES: dict[str, DataType] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}

_CPU_PROVIDER = "CPUExecutionProvider"
_INPUT_ERROR_WORDS = ("broadcast", "shape", "dimension", "out of bounds", "out of range", "indices")
_NODE = re.compile(r"running (?P<op>[\w.]+) node\. Name:'(?P<name>[^']*)'")
_DETAIL = re.compile(r"Status Message: (?P<detail>.*)", re.DOTALL)
_SOURCE_LOCATION = re.compile(r"^\S+\.(?:h|cc|cpp|hpp):\d+ .*? was false\. ", re.DOTALL)


def tensor_specs(args: Sequence[onnxruntime.NodeArg]) -> tuple[TensorSpec, ...]:
    """Session inputs/outputs as ``TensorSpec``s; symbolic or unknown dimensions become -1."""
    specs = []
    for arg in args:
        datatype = _ORT_TYPES.get(arg.type)
        if datatype is None:
            raise BuildError(
                describe(
                    f"model input/output {arg.name!r} is not a plain tensor kiln can serve",
                    seen=arg.type,
                    fix="re-export the model with tensor inputs and outputs (no sequences or maps)",
                )
            )
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
        specs.append(TensorSpec(arg.name, datatype, shape))
    return tuple(specs)


class OrtEngine:
    """A resident ONNX Runtime session plus the signature, profiles and limits it serves under."""

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        *,
        profiles: tuple[ShapeProfile, ...],
        max_batch_size: int,
        thread_plan: ThreadPlan,
        engine_bytes: int,
        activation_bytes_per_sample: int | None = None,
        name: str = "engine",
    ) -> None:
        self._session: onnxruntime.InferenceSession | None = session
        self._inputs = tensor_specs(session.get_inputs())
        self._outputs = tensor_specs(session.get_outputs())
        self._output_names = [o.name for o in self._outputs]
        self._profiles = profiles
        self._max_batch_size = max_batch_size
        arena = activation_bytes_per_sample or 2 * _io_bytes_per_sample(self._inputs + self._outputs)
        self._memory_bytes = engine_bytes + arena * max_batch_size
        self.thread_plan = thread_plan
        self.name = name
        self._prepares_per_shape = any(p != _CPU_PROVIDER for p in session.get_providers())

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    @property
    def profiles(self) -> tuple[ShapeProfile, ...]:
        """Allowed input shapes, from the build spec; empty = any shape the signature accepts."""
        return self._profiles

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def prepares_per_shape(self) -> bool:
        """``False`` on the CPU provider: ONNX Runtime runs any batch size without preparing it, so
        a new version is warmed up on batch 1 and batches are not padded to buckets. ``True`` when
        a device provider (CUDA, TensorRT) is in the session: they tune kernels per shape."""
        return self._prepares_per_shape

    @property
    def closed(self) -> bool:
        return self._session is None

    def create_instance(self) -> OrtInstance:
        """A new instance sharing this engine's session (no weights copied)."""
        self.session()
        return OrtInstance(self)

    def memory_bytes(self) -> int:
        """Engine file bytes (the weights, held once) plus the estimated arena at ``max_batch_size``:
        the build-time sum of intermediate tensors per sample, or without one, twice the input and
        output bytes per sample. An estimate (ONNX Runtime exposes no arena statistics)."""
        return self._memory_bytes

    def close(self) -> None:
        """Drop the session. Runs already in flight finish; later ones raise ``NotReady``."""
        self._session = None

    def session(self) -> onnxruntime.InferenceSession:
        session = self._session
        if session is None:
            raise NotReady(describe(f"engine {self.name!r} is closed", fix="load the artifact again"))
        return session

    def run(self, inputs: Tensors, run_options: onnxruntime.RunOptions | None = None) -> dict[str, Array]:
        """Check ``inputs`` against the signature and profiles, run, and map ORT's errors."""
        check_inputs(self._inputs, inputs, self._profiles)
        session = self.session()
        try:
            values = session.run(self._output_names, dict(inputs), run_options)
        except Exception as exc:
            error = map_run_error(exc, inputs)
            level = logging.INFO if isinstance(error, InvalidInput) else logging.WARNING
            log.log(level, "engine %s: run failed (%s)", self.name, type(error).__name__, exc_info=exc)
            raise error from exc
        return {name: np.asarray(value) for name, value in zip(self._output_names, values, strict=True)}


class OrtInstance:
    """One runner's handle on an engine: its own ``RunOptions``; one thread at a time."""

    def __init__(self, engine: OrtEngine) -> None:
        import onnxruntime as ort

        self._engine = engine
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # fatal only: kiln logs failed runs itself
        self._closed = False

    def run(self, inputs: Tensors) -> dict[str, Array]:
        """Run one batch. ``InvalidInput`` for tensors the model refuses (names, datatypes, shapes,
        profiles, values a node rejects); ``EngineFailed`` for anything else ONNX Runtime raises."""
        if self._closed:
            raise EngineFailed(describe("this engine instance is closed", fix="create a new instance"))
        return self._engine.run(inputs, self._run_options)

    def close(self) -> None:
        self._closed = True


def _io_bytes_per_sample(specs: Sequence[TensorSpec]) -> int:
    def itemsize(spec: TensorSpec) -> int:
        return {"BYTES": 8, "BF16": 2}.get(spec.datatype) or spec.dtype.itemsize

    return sum(math.prod(d if d > 0 else 1 for d in t.shape[1:]) * itemsize(t) for t in specs)


def map_run_error(exc: BaseException, inputs: Tensors) -> KilnError:
    """Turn an exception from ``InferenceSession.run`` into kiln's error, without ORT internals.

    ``InvalidArgument``, and failures whose text is about shapes, broadcasting or index ranges,
    come from the request's data: ``InvalidInput``. Everything else is ``EngineFailed`` (retried
    on a fresh instance). The message names the node and the shapes seen, never C++ source paths.
    """
    text = str(exc)
    kind = type(exc).__name__
    shapes = {name: list(np.shape(value)) for name, value in inputs.items()}
    node = _NODE.search(text)
    where = f"node {node['name'] or '(unnamed)'} ({node['op']})" if node else "the model"
    detail = _client_detail(text)
    if kind == "InvalidArgument" or any(word in text.lower() for word in _INPUT_ERROR_WORDS):
        what = f"{where} refused the inputs" + (f": {detail}" if detail else "")
        return InvalidInput(
            describe(what, seen=shapes, fix="check that inputs agree with each other and with the model")
        )
    what = f"the engine failed running {where} ({kind})"
    return EngineFailed(describe(what, seen=shapes, fix="retried on a new instance; see the server log"))


def _client_detail(text: str) -> str:
    """The human part of an ORT message: after 'Status Message:' and past any C++ source location."""
    match = _DETAIL.search(text)
    detail = match["detail"] if match else text.rsplit(" : ", maxsplit=1)[-1]
    detail = _SOURCE_LOCATION.sub("", detail.strip())
    if re.search(r"\.(?:h|cc|cpp|hpp):\d+", detail) or "onnxruntime::" in detail:
        return ""
    return detail[:200]
