"""A loaded TensorRT engine and its instances (execution contexts).

Each instance owns an execution context bound to its own optimization profile (TensorRT requires a
separate profile per concurrently used context), a CUDA stream and device buffers (torch tensors).
A run sets the input shapes, copies the inputs in, enqueues the engine on the instance's stream,
copies the outputs out and waits for that stream only.

Written against the TensorRT 10/11 Python API; not run in kiln's CI (see ``docs/backends.md``).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from kiln.compile.backends.torch.device_health import check_alive, map_device_error
from kiln.errors import EngineFailed, NotReady, describe
from kiln.model.signature import check_inputs
from kiln.types import Array, ShapeProfile, Tensors, TensorSpec


class TensorRTEngine:
    """A deserialized engine (weights resident once) handing out one instance per profile."""

    def __init__(
        self,
        engine: Any,
        *,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        profiles: tuple[ShapeProfile, ...],
        max_batch_size: int,
        num_profiles: int,
        plan_bytes: int,
        name: str,
    ) -> None:
        self._engine: Any = engine
        self._inputs, self._outputs, self._profiles = inputs, outputs, profiles
        self._max_batch_size = max_batch_size
        self._free = list(range(num_profiles))
        self._lock = threading.Lock()
        self._plan_bytes = plan_bytes
        self.name = name

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    @property
    def profiles(self) -> tuple[ShapeProfile, ...]:
        return self._profiles

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def prepares_per_shape(self) -> bool:
        """``True``: a context sets up each new input shape of its profile on first use."""
        return True

    def create_instance(self) -> TensorRTInstance:
        """A context on the next free optimization profile; ``EngineFailed`` when all are taken
        (build with backend option ``profiles`` >= the model's ``num_instances``)."""
        check_alive(f"engine {self.name}")
        engine = self._engine
        if engine is None:
            raise NotReady(describe(f"engine {self.name!r} is closed", fix="load it again"))
        with self._lock:
            if not self._free:
                raise EngineFailed(
                    describe(
                        "every optimization profile of this TensorRT engine is in use",
                        fix="build with backend option profiles=N, N >= num_instances",
                    )
                )
            profile = self._free.pop(0)
        return TensorRTInstance(self, engine, profile)

    def release_profile(self, profile: int) -> None:
        with self._lock:
            self._free.append(profile)
            self._free.sort()

    def memory_bytes(self) -> int:
        """The plan's size plus TensorRT's reported device memory for one context per profile."""
        engine = self._engine
        if engine is None:
            return 0
        context_bytes = int(
            getattr(engine, "device_memory_size_v2", getattr(engine, "device_memory_size", 0))
        )
        return self._plan_bytes + context_bytes * (len(self._free) or 1)

    def close(self) -> None:
        self._engine = None


class TensorRTInstance:
    """One execution context, stream and set of buffers; one thread at a time."""

    def __init__(self, owner: TensorRTEngine, engine: Any, profile: int) -> None:
        import torch

        self._owner = owner
        self._profile = profile
        self._stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        self._context = engine.create_execution_context()
        self._context.set_optimization_profile_async(profile, self._stream.cuda_stream)
        self._names = [s.name for s in owner.inputs]
        self._output_names = [s.name for s in owner.outputs]
        self._closed = False

    def run(self, inputs: Tensors) -> dict[str, Array]:
        """Run one batch; ``EngineDead`` after a sticky CUDA error, ``EngineFailed`` otherwise."""
        if self._closed:
            raise EngineFailed(describe("this engine instance is closed", fix="create a new instance"))
        check_alive(f"engine {self._owner.name}")
        check_inputs(self._owner.inputs, inputs, self._owner.profiles)
        try:
            return self._run(inputs)
        except Exception as exc:
            raise map_device_error(exc, f"TensorRT engine {self._owner.name}") from exc

    def _run(self, inputs: Tensors) -> dict[str, Array]:
        import torch

        keep: list[torch.Tensor] = []
        with torch.cuda.stream(self._stream):
            for name in self._names:
                tensor = torch.from_numpy(np.ascontiguousarray(inputs[name])).cuda(non_blocking=True)
                keep.append(tensor)
                self._context.set_input_shape(name, tuple(tensor.shape))
                self._context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name in self._output_names:
                shape = tuple(self._context.get_tensor_shape(name))
                dtype = _torch_dtype(self._context.engine.get_tensor_dtype(name))
                out = torch.empty(shape, dtype=dtype, device="cuda")
                self._context.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise EngineFailed(describe("TensorRT refused to enqueue the engine", fix="retried"))
            host = {name: out.to("cpu", non_blocking=True) for name, out in outputs.items()}
        self._stream.synchronize()
        del keep
        return {name: tensor.numpy() for name, tensor in host.items()}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner.release_profile(self._profile)


def _torch_dtype(trt_dtype: Any) -> Any:
    import tensorrt as trt
    import torch

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    bf16 = getattr(trt, "bfloat16", None)
    if bf16 is not None:
        table[bf16] = torch.bfloat16
    return table[trt_dtype]
