"""What a load step measured: frozen results with JSON round trips, and the recorder that fills them.

A :class:`StepRecorder` counts one step's requests while it runs (on the event loop's thread);
``result()`` freezes it into a :class:`StepResult`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from kiln.bench.histogram import LatencyHistogram, LatencySummary

Shape: TypeAlias = Literal["closed", "open", "soak"]


@dataclass(frozen=True, slots=True)
class Reply:
    """How the target served one request, when it says so (the in-process runtime does).

    ``queue_ns``: admission to the start of its batch; ``compute_ns``: joining, running and
    splitting that batch; ``version``: the model version that served it.
    """

    queue_ns: int | None = None
    compute_ns: int | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class ServerCounters:
    """Cumulative server-side totals (Triton's statistics extension), read before and after a step."""

    success_count: int
    fail_count: int
    queue_ns: int
    compute_ns: int

    def minus(self, earlier: ServerCounters) -> ServerCounters:
        return ServerCounters(
            self.success_count - earlier.success_count,
            self.fail_count - earlier.fail_count,
            self.queue_ns - earlier.queue_ns,
            self.compute_ns - earlier.compute_ns,
        )


@dataclass(frozen=True, slots=True)
class ServerSplit:
    """Where a request's time went on the server: waiting in the queue vs computing its batch.

    ``source`` is ``per-request`` (every reply carried its times: means and p99s) or
    ``server-stats`` (deltas of the server's cumulative counters over the step: means only).
    """

    source: str
    queue_mean_ms: float
    compute_mean_ms: float
    queue_p99_ms: float | None = None
    compute_p99_ms: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "queue_mean_ms": self.queue_mean_ms,
            "compute_mean_ms": self.compute_mean_ms,
            "queue_p99_ms": self.queue_p99_ms,
            "compute_p99_ms": self.compute_p99_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ServerSplit:
        def opt(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)  # type: ignore[arg-type]

        return cls(
            str(data["source"]),
            float(data["queue_mean_ms"]),  # type: ignore[arg-type]
            float(data["compute_mean_ms"]),  # type: ignore[arg-type]
            opt("queue_p99_ms"),
            opt("compute_p99_ms"),
        )

    @classmethod
    def from_counters(cls, delta: ServerCounters) -> ServerSplit | None:
        if delta.success_count <= 0:
            return None
        n = delta.success_count
        return cls("server-stats", delta.queue_ns / n / 1e6, delta.compute_ns / n / 1e6)


@dataclass(frozen=True)
class StepResult:
    """One load step: ``ok`` requests and ``errors`` by kind over ``duration_s`` of measurement
    (the measured span, extended to the end of the last measured request when that came later).

    ``label`` names the step (``c=4``, ``500/s``); ``concurrency`` (closed loop) or ``rate_per_s``
    (open loop and soak) says what was offered. Latency is end to end as the client saw it; in an
    open loop it counts from each request's scheduled arrival. ``errors`` maps an error kind (the
    exception class, or the protocol status) to its count.
    """

    label: str
    shape: Shape
    duration_s: float
    ok: int
    errors: Mapping[str, int]
    latency: LatencyHistogram
    concurrency: int | None = None
    rate_per_s: float | None = None
    split: ServerSplit | None = None
    versions: Mapping[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def summary(self) -> LatencySummary:
        return self.latency.summary()

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "shape": self.shape,
            "concurrency": self.concurrency,
            "rate_per_s": self.rate_per_s,
            "duration_s": self.duration_s,
            "ok": self.ok,
            "failed": self.failed,
            "errors": dict(self.errors),
            "throughput_per_s": self.throughput_per_s,
            "latency_ms": self.summary.to_json(),
            "split": None if self.split is None else self.split.to_json(),
            "versions": dict(self.versions),
            "histogram": self.latency.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> StepResult:
        split = data.get("split")
        return cls(
            label=str(data["label"]),
            shape=data["shape"],  # type: ignore[arg-type]
            duration_s=float(data["duration_s"]),  # type: ignore[arg-type]
            ok=int(data["ok"]),  # type: ignore[call-overload]
            errors={str(k): int(v) for k, v in dict(data["errors"]).items()},  # type: ignore[call-overload]
            latency=LatencyHistogram.from_json(data["histogram"]),  # type: ignore[arg-type]
            concurrency=None if data.get("concurrency") is None else int(data["concurrency"]),  # type: ignore[call-overload]
            rate_per_s=None if data.get("rate_per_s") is None else float(data["rate_per_s"]),  # type: ignore[arg-type]
            split=None if split is None else ServerSplit.from_json(split),  # type: ignore[arg-type]
            versions={str(k): int(v) for k, v in dict(data.get("versions") or {}).items()},  # type: ignore[call-overload]
        )


def error_kind(exc: BaseException) -> str:
    """The kind an error is counted under: a target's own kind when it gives one, else the class name."""
    kind = getattr(exc, "kind", None)
    return kind if isinstance(kind, str) and kind else type(exc).__name__


class StepRecorder:
    """Counts one step's requests. Record only from the event loop's thread."""

    def __init__(self) -> None:
        self.latency = LatencyHistogram()
        self.queue = LatencyHistogram()
        self.compute = LatencyHistogram()
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.last_done_s: float | None = None

    def span_s(self, measure_from: float, duration_s: float) -> float:
        """The step's measured duration: ``duration_s``, or longer when the last measured request
        ended later (a server that fell behind finishes its backlog after the arrivals stop, and
        its throughput is what it served over that whole span)."""
        if self.last_done_s is None:
            return duration_s
        return max(duration_s, self.last_done_s - measure_from)

    def success(self, latency_ns: int, reply: Reply) -> None:
        self.ok += 1
        self.latency.record_ns(latency_ns)
        if reply.queue_ns is not None:
            self.queue.record_ns(reply.queue_ns)
        if reply.compute_ns is not None:
            self.compute.record_ns(reply.compute_ns)
        if reply.version is not None:
            self.versions[reply.version] += 1

    def failure(self, kind: str) -> None:
        self.errors[kind] += 1

    def split(self, delta: ServerCounters | None) -> ServerSplit | None:
        """Per-request times when replies carried them, else the server's counter deltas."""
        if self.queue.count and self.compute.count:
            return ServerSplit(
                "per-request",
                self.queue.mean_ns / 1e6,
                self.compute.mean_ns / 1e6,
                self.queue.percentile_ms(99),
                self.compute.percentile_ms(99),
            )
        return None if delta is None else ServerSplit.from_counters(delta)

    def result(
        self,
        label: str,
        shape: Shape,
        duration_s: float,
        *,
        concurrency: int | None = None,
        rate_per_s: float | None = None,
        counters: ServerCounters | None = None,
    ) -> StepResult:
        return StepResult(
            label=label,
            shape=shape,
            duration_s=duration_s,
            ok=self.ok,
            errors=dict(self.errors),
            latency=self.latency.copy(),
            concurrency=concurrency,
            rate_per_s=rate_per_s,
            split=self.split(counters),
            versions=dict(self.versions),
        )
