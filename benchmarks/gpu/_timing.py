"""Timing and accuracy helpers for the GPU benchmark.

Device time: CUDA events around each call on the stream that runs it, synchronised after every
call (single-request latency, host launch overhead included), after warm-up. Host round trips
(numpy in, numpy out through an engine instance): ``perf_counter``. Throughput = batch / median.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    batch: int
    median_ms: float
    p99_ms: float
    iters: int

    @property
    def items_per_s(self) -> float:
        return self.batch / (self.median_ms / 1e3) if self.median_ms > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "median_ms": round(self.median_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "items_per_s": round(self.items_per_s, 1),
            "iters": self.iters,
        }


def _summary(batch: int, samples_ms: Sequence[float]) -> Timing:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Timing(batch, statistics.median(ordered), p99, len(ordered))


def iterations(batch: int, smoke: bool) -> tuple[int, int]:
    """(warm-up, timed) iterations: fewer for big batches, few in a smoke run."""
    if smoke:
        return 2, 5
    return (10, 100) if batch <= 32 else (5, 40)


def time_device(
    fn: Callable[[], Any], batch: int, *, warmup: int, iters: int, stream: torch.cuda.Stream | None = None
) -> Timing:
    """Per-call device time with CUDA events (falls back to the wall clock on the CPU)."""
    if not torch.cuda.is_available():
        return time_wall(fn, batch, warmup=warmup, iters=iters)
    stream = stream or torch.cuda.current_stream()
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return _summary(batch, samples)


def time_wall(fn: Callable[[], Any], batch: int, *, warmup: int, iters: int) -> Timing:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1e3)
    return _summary(batch, samples)


@dataclass(frozen=True)
class Concurrent:
    batch: int
    threads: int
    items_per_s: float
    p50_ms: float
    p99_ms: float
    calls: int

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "threads": self.threads,
            "items_per_s": round(self.items_per_s, 1),
            "median_ms": round(self.p50_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "calls": self.calls,
        }


def time_concurrent(calls: Sequence[Callable[[], Any]], batch: int, seconds: float) -> Concurrent:
    """Each callable in its own thread, looping for ``seconds``; aggregate throughput and latency."""
    latencies: list[list[float]] = [[] for _ in calls]
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(len(calls))

    def loop(index: int) -> None:
        fn = calls[index]
        fn()
        barrier.wait()
        while time.perf_counter() < stop:
            started = time.perf_counter()
            fn()
            latencies[index].append((time.perf_counter() - started) * 1e3)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(calls))]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = sorted(x for lat in latencies for x in lat)
    if not flat:
        return Concurrent(batch, len(calls), 0.0, 0.0, 0.0, 0)
    summary = _summary(batch, flat)
    return Concurrent(
        batch, len(calls), batch * len(flat) / elapsed, summary.median_ms, summary.p99_ms, len(flat)
    )


def accuracy(candidate: Any, reference: Any) -> dict[str, float]:
    """Relative L2 error, max absolute error and (for 2-D outputs) top-1 agreement."""
    cand = np.asarray(candidate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    result = {
        "rel_l2": float(np.linalg.norm(cand - ref) / max(np.linalg.norm(ref), 1e-30)),
        "max_abs": float(np.abs(cand - ref).max()),
        "finite": bool(np.isfinite(cand).all()),
    }
    if cand.ndim == 2 and cand.shape[1] > 1:
        result["top1_agreement"] = float((cand.argmax(1) == ref.argmax(1)).mean())
    return result


def to_numpy(value: Any) -> np.ndarray[Any, Any]:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value)
