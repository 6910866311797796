"""The runtime's metric families, built at scrape time from ``Runtime.stats()`` and ``status()``.

Rates and latencies are labelled by ``model`` only and come from the model's totals, which stay
monotonic while versions come and go: with a retrain every few minutes, per-version histograms
would create hundreds of short-lived series a day and lose the counts a version made before its
first scrape. What is per version (requests by outcome, state, memory, health) is labelled with
``version`` too and covers the resident versions (the state also covers recently failed ones).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from kiln.runtime.lifecycle import VersionState, VersionStatus
from kiln.runtime.results import RuntimeStatus
from kiln.runtime.stats import Counter, HistogramSnapshot, ModelStats, StatsSnapshot

BATCH_SIZE_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper bounds of the batch-size histogram (rows per engine run)."""

HEALTHS = ("healthy", "unhealthy", "dead")
_RESIDENT = frozenset({VersionState.WARMING, VersionState.READY, VersionState.DRAINING})

_COUNTER_DOCS: Mapping[Counter, str] = {
    Counter.RETRIES: "Engine runs retried after a transient failure.",
    Counter.INSTANCE_REBUILDS: "Execution instances discarded and rebuilt after a failure.",
    Counter.FALLBACK_BATCHES: "Batches run on the fallback engine.",
    Counter.ROUTING_CHANGES: "Moves of traffic between the primary and the fallback engine.",
    Counter.SWAPS: "New versions made active (hot swaps).",
    Counter.ROLLBACKS: "Rollbacks to the previous version.",
    Counter.LOAD_FAILURES: "Version loads that failed (load, warm-up or checks).",
    Counter.PROBES: "Probes of an unhealthy primary engine.",
}


def outcome_label(reason: str) -> str:
    """``DeadlineExceeded`` -> ``deadline_exceeded``: a failure reason as a label value."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", reason).lower()


def runtime_families(stats: Mapping[str, ModelStats], status: RuntimeStatus) -> list[Metric]:
    """Every runtime metric family for one scrape (pure: snapshots in, families out)."""
    models = [s.model for s in stats.values()]
    families: list[Metric] = [
        _requests(models),
        _version_requests([v for s in stats.values() for v in s.versions]),
        *_throughput(models),
        *(_histogram(models, name, doc, attr) for name, doc, attr in _LATENCIES),
        _batch_sizes(models),
        *_counters(models),
    ]
    families += _status_families(status)
    return families


def _requests(models: list[StatsSnapshot]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "kiln_requests",
        "Requests finished, by outcome: success, or the failure (overloaded, deadline_exceeded, ...).",
        labels=["model", "outcome"],
    )
    for s in models:
        for outcome, count in _outcomes(s):
            family.add_metric([s.model, outcome], count)
    return family


def _version_requests(versions: list[StatsSnapshot]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "kiln_version_requests",
        "Requests finished by each resident version, by outcome.",
        labels=["model", "version", "outcome"],
    )
    for s in versions:
        for outcome, count in _outcomes(s):
            family.add_metric([s.model, s.version, outcome], count)
    return family


def _outcomes(s: StatsSnapshot) -> Iterator[tuple[str, int]]:
    yield "success", s.success.count
    merged: dict[str, int] = {}
    for reason, count in s.failures.items():
        label = outcome_label(reason)
        merged[label] = merged.get(label, 0) + count
    yield from sorted(merged.items())


def _throughput(models: list[StatsSnapshot]) -> Iterator[Metric]:
    rows = CounterMetricFamily("kiln_inferences", "Rows inferred (padding excluded).", labels=["model"])
    runs = CounterMetricFamily("kiln_executions", "Engine runs (batches).", labels=["model"])
    pads = CounterMetricFamily("kiln_padding_rows", "Zero rows added to pad batches.", labels=["model"])
    phases = CounterMetricFamily(
        "kiln_compute_phase_seconds",
        "Compute time of successful requests by phase: input (join), infer (engine), output (split).",
        labels=["model", "phase"],
    )
    for s in models:
        rows.add_metric([s.model], s.inference_count)
        runs.add_metric([s.model], s.execution_count)
        pads.add_metric([s.model], s.padding_rows)
        for phase, duration in (
            ("input", s.compute_input),
            ("infer", s.compute_infer),
            ("output", s.compute_output),
        ):
            phases.add_metric([s.model, phase], duration.ns / 1e9)
    yield from (rows, runs, pads, phases)


_LATENCIES = (
    ("kiln_request_duration_seconds", "Successful requests, arrival to result.", "request_latency"),
    (
        "kiln_queue_duration_seconds",
        "Successful requests, arrival to the start of their batch.",
        "queue_latency",
    ),
    (
        "kiln_compute_duration_seconds",
        "Successful requests, their batch's join + run + split.",
        "compute_latency",
    ),
)


def _histogram(models: list[StatsSnapshot], name: str, doc: str, attr: str) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["model"])
    for s in models:
        snap: HistogramSnapshot = getattr(s, attr)
        family.add_metric([s.model], histogram_buckets(snap), snap.sum_s)
    return family


def bucket_label(bound: float) -> str:
    """A bucket's ``le`` label: ``+Inf``, or the bound as Python writes it (``0.000113``, ``41.9``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def histogram_buckets(snap: HistogramSnapshot) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs, ``+Inf`` last, from the runtime's per-bucket counts."""
    bounds = [bucket_label(b) for b in (*snap.bounds_s, math.inf)]
    return list(zip(bounds, (float(c) for c in snap.cumulative()), strict=True))


def _batch_sizes(models: list[StatsSnapshot]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "kiln_batch_size_rows", "Real rows per engine run (padding excluded).", labels=["model"]
    )
    for s in models:
        runs = {rows: d.count for rows, d in s.batch_sizes.items()}
        cumulative = [sum(n for rows, n in runs.items() if rows <= bound) for bound in BATCH_SIZE_BUCKETS]
        buckets = [(bucket_label(b), float(c)) for b, c in zip(BATCH_SIZE_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", float(sum(runs.values()))))
        family.add_metric([s.model], buckets, float(sum(rows * n for rows, n in runs.items())))
    return family


def _counters(models: list[StatsSnapshot]) -> Iterator[CounterMetricFamily]:
    for counter, doc in _COUNTER_DOCS.items():
        family = CounterMetricFamily(f"kiln_{counter.value}", doc, labels=["model"])
        for s in models:
            family.add_metric([s.model], s.counter(counter))
        yield family


def _status_families(status: RuntimeStatus) -> list[Metric]:
    def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=list(labels))

    live = gauge("kiln_runtime_live", "1 while no model's primary engine is dead.")
    live.add_metric([], float(status.live))
    ready = gauge("kiln_runtime_ready", "1 when every model has an active version that can serve.")
    ready.add_metric([], float(status.ready))
    per_model = {
        "ready": gauge("kiln_model_ready", "1 when the model has an active version that can serve.", "model"),
        "live": gauge("kiln_model_live", "1 while no resident version's primary engine is dead.", "model"),
        "queue": gauge("kiln_queue_depth", "Requests waiting in the model's queue.", "model"),
        "running": gauge("kiln_inflight_batches", "Batches running on the model's engines now.", "model"),
        "memory": gauge("kiln_model_memory_bytes", "Memory held by the model's resident engines.", "model"),
    }
    for m in status.models:
        per_model["ready"].add_metric([m.name], float(m.ready))
        per_model["live"].add_metric([m.name], float(m.live))
        per_model["queue"].add_metric([m.name], m.queue_size)
        per_model["running"].add_metric([m.name], m.running_batches)
        per_model["memory"].add_metric([m.name], m.memory_bytes)
    return [live, ready, *per_model.values(), *_version_families(status)]


def latest_versions(versions: tuple[VersionStatus, ...]) -> list[VersionStatus]:
    """The latest load of each version name (oldest first), UNLOADED ones left out."""
    latest = {v.version: v for v in versions}
    return [v for v in latest.values() if v.state is not VersionState.UNLOADED]


def _version_families(status: RuntimeStatus) -> list[Metric]:
    labels = ["model", "version"]
    state = GaugeMetricFamily(
        "kiln_version_state",
        "1 for the version's current state, 0 for the others.",
        labels=[*labels, "state"],
    )
    active = GaugeMetricFamily(
        "kiln_version_active", "1 for the version serving new requests.", labels=labels
    )
    memory = GaugeMetricFamily(
        "kiln_version_memory_bytes", "Memory held by the version's engines.", labels=labels
    )
    fallback = GaugeMetricFamily(
        "kiln_version_on_fallback", "1 while the version's batches run on its fallback engine.", labels=labels
    )
    health = GaugeMetricFamily(
        "kiln_version_primary_health",
        "1 for the primary engine's health (healthy, unhealthy, dead), 0 for the others.",
        labels=[*labels, "health"],
    )
    for m in status.models:
        for v in latest_versions(m.versions):
            for s in VersionState:
                if s is not VersionState.UNLOADED:
                    state.add_metric([m.name, v.version, s.value], float(v.state is s))
            active.add_metric([m.name, v.version], float(v.active))
            if v.state not in _RESIDENT:
                continue
            memory.add_metric([m.name, v.version], v.memory_bytes)
            fallback.add_metric([m.name, v.version], float(v.route == "fallback"))
            for h in HEALTHS:
                health.add_metric([m.name, v.version, h], float(v.primary_health == h))
    return [state, active, memory, fallback, health]
