"""Plain statistics per model and per version, ready for Prometheus and Triton-style reports.

Durations are kept Triton's way (a count and a sum of nanoseconds per phase: success, fail, queue,
compute_input, compute_infer, compute_output); latencies also go into fixed log-spaced buckets so
histograms and percentiles can be built later without keeping samples. A version's :class:`Stats`
also feeds its model's, so model totals stay monotonic when versions come and go.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

LATENCY_BUCKETS_S: tuple[float, ...] = tuple(float(f"{10e-6 * 2 ** (k / 2):.3g}") for k in range(45))
"""Upper bounds of the latency buckets: 10 µs to about 42 s, two per doubling (x√2, rounded to three
significant digits), plus one overflow bucket. Half-doubling steps keep a percentile read from the
buckets within one bucket (under 42%, and much less once interpolated) for a 200 µs CTR model and a
100 ms CNN alike, where plain doubling could not tell 100 ms from 160 ms."""


class Counter(StrEnum):
    RETRIES = "retries"
    INSTANCE_REBUILDS = "instance_rebuilds"
    FALLBACK_BATCHES = "fallback_batches"
    ROUTING_CHANGES = "routing_changes"
    SWAPS = "swaps"
    ROLLBACKS = "rollbacks"
    LOAD_FAILURES = "load_failures"
    PROBES = "probes"


@dataclass(frozen=True, slots=True)
class Duration:
    """Triton's ``{count, ns}`` pair."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Observations per bucket: ``counts[i]`` fell in ``(bounds_s[i-1], bounds_s[i]]``; the last
    entry counts those above every bound."""

    bounds_s: tuple[float, ...]
    counts: tuple[int, ...]
    sum_s: float
    count: int

    def cumulative(self) -> tuple[int, ...]:
        total, out = 0, []
        for c in self.counts:
            total += c
            out.append(total)
        return tuple(out)

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (0..1); 0.0 when empty."""
        if self.count == 0:
            return 0.0
        rank = q * self.count
        for bound, seen in zip((*self.bounds_s, float("inf")), self.cumulative(), strict=True):
            if seen >= rank:
                return bound
        return float("inf")


class _Histogram:
    __slots__ = ("count", "counts", "sum_s")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.sum_s = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds
        self.count += 1

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(LATENCY_BUCKETS_S, tuple(self.counts), self.sum_s, self.count)


@dataclass(frozen=True)
class StatsSnapshot:
    """Stats of one model (``version`` empty) or one version, at one moment.

    ``inference_count`` counts rows served (padding excluded), ``execution_count`` engine runs;
    ``batch_sizes`` maps a batch's real rows to its runs and their compute_infer time.
    ``last_inference_ms`` is wall-clock Unix milliseconds of the last success (0: never).
    """

    model: str
    version: str
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    inference_count: int
    execution_count: int
    last_inference_ms: int
    padding_rows: int
    failures: Mapping[str, int]
    batch_sizes: Mapping[int, Duration]
    counters: Mapping[Counter, int]
    request_latency: HistogramSnapshot
    queue_latency: HistogramSnapshot
    compute_latency: HistogramSnapshot

    def counter(self, name: Counter) -> int:
        return self.counters.get(name, 0)


@dataclass
class _Sums:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


_PHASES = ("success", "fail", "queue", "input", "infer", "output")


@dataclass
class _State:
    phases: dict[str, _Sums] = field(default_factory=lambda: {k: _Sums() for k in _PHASES})
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    padding_rows: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    batch_sizes: dict[int, _Sums] = field(default_factory=dict)
    counters: dict[Counter, int] = field(default_factory=dict)
    request: _Histogram = field(default_factory=_Histogram)
    queue: _Histogram = field(default_factory=_Histogram)
    compute: _Histogram = field(default_factory=_Histogram)
    _success: tuple[_Sums, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        p = self.phases
        self._success = (p["success"], p["queue"], p["input"], p["infer"], p["output"])

    def add_success(
        self, ns: tuple[int, int, int, int, int], seconds: tuple[float, float, float], now_ms: int
    ) -> None:
        """One served request: ``ns`` = (total, queue, input, infer, output); ``seconds`` = (total,
        queue, compute) for the histograms."""
        for sums, ns_value in zip(self._success, ns):  # noqa: B905 (both have five entries)
            sums.count += 1
            sums.ns += ns_value
        self.last_inference_ms = now_ms
        for histogram, s_value in zip((self.request, self.queue, self.compute), seconds):  # noqa: B905
            histogram.counts[bisect_left(LATENCY_BUCKETS_S, s_value)] += 1
            histogram.sum_s += s_value
            histogram.count += 1


class Stats:
    """Thread-safe counters of one model or version. Each record also goes to ``parent``."""

    def __init__(self, model: str, version: str = "", parent: Stats | None = None) -> None:
        self.model = model
        self.version = version
        self._parent = parent
        self._lock = threading.Lock()
        self._s = _State()

    def record_success(
        self, *, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int, total_ns: int
    ) -> None:
        ns = (total_ns, queue_ns, input_ns, infer_ns, output_ns)
        seconds = (total_ns / 1e9, queue_ns / 1e9, (input_ns + infer_ns + output_ns) / 1e9)
        now_ms = int(time.time() * 1000)
        stats: Stats | None = self
        while stats is not None:  # this one, then its parents: computed once, added to each
            with stats._lock:
                stats._s.add_success(ns, seconds, now_ms)
            stats = stats._parent

    def record_failure(self, reason: str, total_ns: int) -> None:
        with self._lock:
            self._s.phases["fail"].add(total_ns)
            self._s.failures[reason] = self._s.failures.get(reason, 0) + 1
        if self._parent is not None:
            self._parent.record_failure(reason, total_ns)

    def record_batch(self, rows: int, padded_rows: int, infer_ns: int) -> None:
        with self._lock:
            self._s.execution_count += 1
            self._s.inference_count += rows
            self._s.padding_rows += padded_rows - rows
            self._s.batch_sizes.setdefault(rows, _Sums()).add(infer_ns)
        if self._parent is not None:
            self._parent.record_batch(rows, padded_rows, infer_ns)

    def count(self, name: Counter, n: int = 1) -> None:
        with self._lock:
            self._s.counters[name] = self._s.counters.get(name, 0) + n
        if self._parent is not None:
            self._parent.count(name, n)

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            s = self._s
            d = {k: Duration(v.count, v.ns) for k, v in s.phases.items()}
            return StatsSnapshot(
                model=self.model,
                version=self.version,
                success=d["success"],
                fail=d["fail"],
                queue=d["queue"],
                compute_input=d["input"],
                compute_infer=d["infer"],
                compute_output=d["output"],
                inference_count=s.inference_count,
                execution_count=s.execution_count,
                last_inference_ms=s.last_inference_ms,
                padding_rows=s.padding_rows,
                failures=dict(s.failures),
                batch_sizes={k: Duration(v.count, v.ns) for k, v in sorted(s.batch_sizes.items())},
                counters=dict(s.counters),
                request_latency=s.request.snapshot(),
                queue_latency=s.queue.snapshot(),
                compute_latency=s.compute.snapshot(),
            )


@dataclass(frozen=True)
class ModelStats:
    """A model's totals (every version it ever served) and its resident versions' own stats."""

    model: StatsSnapshot
    versions: tuple[StatsSnapshot, ...]
