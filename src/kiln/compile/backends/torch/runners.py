"""How one engine instance runs a batch: CUDA graphs on its own stream, or plain calls.

``GraphRunner`` (CUDA) owns everything one instance needs and shares nothing mutable with other
instances: a CUDA stream, pinned host buffers for inputs and outputs, device input buffers, and one
captured CUDA graph per batch bucket in a private memory pool. A run copies the request into the
pinned buffer, then on the instance's stream: host->device copy, graph replay, device->host copy of
the outputs; then waits for its stream only. Several instances therefore overlap their copies and
compute; and since outputs are copied out before ``run`` returns, a graph is never replayed while
its previous outputs are still being read.

``DirectRunner`` calls the (compiled) forward on the inputs, padded to the bucket: the CPU path,
and CUDA with ``cuda_graphs=off``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np
import torch

from kiln.compile.backends.torch.compiler import Forward, sample_inputs
from kiln.types import Array, TensorSpec

_CAPTURE_LOCK = threading.Lock()
"""Captures are serialised in the process, so each instance's device memory can be measured."""


class RunResult:
    __slots__ = ("index_error", "outputs")

    def __init__(self, outputs: list[Array], index_error: bool) -> None:
        self.outputs = outputs
        self.index_error = index_error


class GraphRunner:
    """One instance's stream, buffers and captured graphs (see the module docstring)."""

    def __init__(
        self,
        forward: Forward,
        specs: Sequence[TensorSpec],
        shapes: Sequence[tuple[int, ...]],
        buckets: Sequence[int | None],
        device: torch.device,
        *,
        has_flag: bool,
    ) -> None:
        self._device = device
        self._has_flag = has_flag
        self.stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self._pool = torch.cuda.graph_pool_handle()
        top = max((b for b in buckets if b is not None), default=None)
        feeds = sample_inputs(specs, shapes, top, device)
        self._dev_in = [t.contiguous() for t in feeds]
        self._host_in = [_pinned(t) for t in feeds]
        self._host_in_np = [t.numpy() for t in self._host_in]
        self._graphs: dict[int | None, torch.cuda.CUDAGraph] = {}
        self._outs: dict[int | None, tuple[torch.Tensor, ...]] = {}
        with _CAPTURE_LOCK:
            before = torch.cuda.memory_reserved(device)
            for rows in sorted(buckets, key=lambda b: -(b or 0)):
                self._capture(forward, rows)
            outs = self._outs[max(buckets, key=lambda b: b or 0)]
            self._host_out = [_pinned(o) for o in outs]
            self._host_out_np = [o.numpy() for o in self._host_out]
            torch.cuda.synchronize(device)
            grown = max(0, torch.cuda.memory_reserved(device) - before)
        inputs = sum(t.numel() * t.element_size() for t in self._dev_in)
        pooled = _pool_bytes(self._pool, device)
        self.device_bytes = inputs + pooled if pooled is not None else grown

    def _capture(self, forward: Forward, rows: int | None) -> None:
        args = [t if rows is None else t[:rows] for t in self._dev_in]
        self.stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.no_grad(), torch.cuda.stream(self.stream):
            forward(*args)  # warm-up on this stream: library handles and workspaces before capture
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with (
            torch.no_grad(),
            torch.cuda.graph(graph, pool=self._pool, stream=self.stream, capture_error_mode="thread_local"),
        ):
            outs = forward(*args)
        self._graphs[rows] = graph
        self._outs[rows] = tuple(outs)

    @property
    def host_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self._host_in, *self._host_out))

    def run(self, arrays: Sequence[Array], rows: int | None, bucket: int | None) -> RunResult:
        for host, array in zip(self._host_in_np, arrays, strict=True):
            if rows is None or bucket is None:
                np.copyto(host, array, casting="no")
                continue
            np.copyto(host[:rows], array, casting="no")
            if bucket > rows:
                host[rows:bucket] = 0
        outs = self._outs[bucket]
        with torch.cuda.stream(self.stream):
            for dev, host_tensor in zip(self._dev_in, self._host_in, strict=True):
                if bucket is None:
                    dev.copy_(host_tensor, non_blocking=True)
                else:
                    dev[:bucket].copy_(host_tensor[:bucket], non_blocking=True)
            self._graphs[bucket].replay()
            for out, host_out in zip(outs, self._host_out, strict=True):
                if rows is None or out.dim() == 0:
                    host_out.copy_(out, non_blocking=True)
                else:
                    host_out[:rows].copy_(out[:rows], non_blocking=True)
        self.stream.synchronize()
        results = [_read(host, out, rows) for host, out in zip(self._host_out_np, outs, strict=True)]
        flag = bool(results.pop()) if self._has_flag else False
        return RunResult(results, flag)

    def replay(self, bucket: int | None) -> None:
        """Replay one bucket's graph on device-resident inputs (benchmarks: in-engine time)."""
        with torch.cuda.stream(self.stream):
            self._graphs[bucket].replay()

    def close(self) -> None:
        self.stream.synchronize()
        self._graphs.clear()
        self._outs.clear()


def _pool_bytes(pool: object, device: torch.device) -> int | None:
    """Bytes of the device segments of one private graph memory pool (``None`` when this torch's
    memory snapshot does not say which pool a segment belongs to)."""
    segments = torch.cuda.memory._snapshot(device).get("segments", [])
    if not segments or "segment_pool_id" not in segments[0]:
        return None
    wanted = tuple(cast("Iterable[object]", pool))
    return sum(int(s["total_size"]) for s in segments if tuple(s["segment_pool_id"]) == wanted)


def _pinned(like: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(like.shape), dtype=like.dtype, pin_memory=True)


def _read(host: np.ndarray[Any, Any], out: torch.Tensor, rows: int | None) -> Array:
    if rows is None or out.dim() == 0:
        return np.array(host, copy=True)
    return np.array(host[:rows], copy=True)


class DirectRunner:
    """Calls the forward directly on the (padded) inputs; see the module docstring."""

    device_bytes = 0
    host_bytes = 0

    def __init__(self, forward: Forward, device: torch.device, *, has_flag: bool) -> None:
        self._forward = forward
        self._device = device
        self._has_flag = has_flag

    def run(self, arrays: Sequence[Array], rows: int | None, bucket: int | None) -> RunResult:
        tensors = []
        for array in arrays:
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            if rows is not None and bucket is not None and bucket > rows:
                pad = torch.zeros((bucket - rows, *tensor.shape[1:]), dtype=tensor.dtype)
                tensor = torch.cat([tensor, pad])
            tensors.append(tensor.to(self._device, non_blocking=False))
        with torch.no_grad():
            outs = list(self._forward(*tensors))
        flag = bool(outs.pop().item()) if self._has_flag else False
        results = [o.detach().cpu().numpy() for o in outs]
        if rows is not None:
            results = [r[:rows] if r.ndim else r for r in results]
        return RunResult([np.array(r, copy=True) for r in results], flag)

    def replay(self, bucket: int | None) -> None:
        raise NotImplementedError("direct runners have no captured graphs")

    def close(self) -> None:
        pass
