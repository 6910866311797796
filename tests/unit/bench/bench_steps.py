"""Hand-made load steps for the pure capacity/gate decisions: a known throughput and p99."""

from __future__ import annotations

from kiln.bench.histogram import LatencyHistogram
from kiln.bench.results import StepResult


def step(
    label: str, throughput: float, p99_ms: float, *, failed: int = 0, duration_s: float = 1.0
) -> StepResult:
    """``throughput`` requests in ``duration_s``; every latency ``p99_ms`` (so p99 is ``p99_ms``)."""
    histogram = LatencyHistogram()
    ok = round(throughput * duration_s)
    if ok:
        histogram.record_ns(round(p99_ms * 1e6), ok)
    errors = {"HTTP 500": failed} if failed else {}
    return StepResult(label, "closed", duration_s, ok, errors, histogram, concurrency=1)
