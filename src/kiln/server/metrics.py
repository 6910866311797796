"""``/metrics``: kiln's Prometheus metrics, read at scrape time (nothing is updated per request).

One :class:`ServerMetrics` per process holds one registry with:

- the runtime's families (``kiln.server.metrics_runtime``), from ``Runtime.stats()``/``status()``;
- engine-cache, build and load events (:class:`~kiln.server.metrics_events.BuildMetrics`, fed by
  the model repository through ``metrics.builds``);
- metered usage per tenant and model, from :class:`~kiln.metering.Metering`'s running totals;
- GPU utilization, memory and power through NVML when a GPU is present;
- the process (CPU, memory, open files) and Python version, from ``prometheus_client``.

Mount it with ``create_metrics_app(metrics)``; ``metrics_text(metrics)`` gives the same text.
Names, labels and PromQL examples: ``docs/metrics.md``.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Literal, Protocol, cast

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    make_asgi_app,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kiln.metering.meter import MeteringSnapshot
from kiln.runtime.results import RuntimeStatus
from kiln.runtime.stats import ModelStats
from kiln.server.metrics_events import BuildMetrics
from kiln.server.metrics_gpu import GpuCollector
from kiln.server.metrics_runtime import runtime_families

if TYPE_CHECKING:
    from starlette.types import ASGIApp

log = logging.getLogger("kiln.server.metrics")

__all__ = [
    "BuildMetrics",
    "GpuCollector",
    "RuntimeCollector",
    "RuntimeSource",
    "ServerMetrics",
    "UsageCollector",
    "UsageSource",
    "create_metrics_app",
    "metrics_text",
    "usage_families",
]


class RuntimeSource(Protocol):
    """What the collector reads from the runtime (``kiln.runtime.Runtime`` fits)."""

    def stats(self) -> Mapping[str, ModelStats]: ...
    def status(self) -> RuntimeStatus: ...


class UsageSource(Protocol):
    """What the collector reads from metering (``kiln.metering.Metering`` fits)."""

    def snapshot(self) -> MeteringSnapshot: ...


class RuntimeCollector:
    def __init__(self, runtime: RuntimeSource) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        yield from runtime_families(self.runtime.stats(), self.runtime.status())


def usage_families(snapshot: MeteringSnapshot) -> list[Metric]:
    """Metered usage per (tenant, model) and the ledger's health, from one metering snapshot."""
    names = {
        "requests": ("kiln_metered_requests", "Requests metered."),
        "items": ("kiln_metered_items", "Rows (batch items) metered."),
        "device_seconds": ("kiln_metered_device_seconds", "Device time charged to the requests."),
        "epu": ("kiln_metered_epu", "EPU charged: device-seconds x the engine's efficiency factor."),
    }
    families = {k: CounterMetricFamily(n, d, labels=["tenant", "model"]) for k, (n, d) in names.items()}
    for (tenant, model), usage in sorted(snapshot.usage.items()):
        for key, family in families.items():
            family.add_metric([tenant, model], float(getattr(usage, key)))
    rejected = CounterMetricFamily(
        "kiln_metering_rejected_events",
        "Usage events dropped, by reason (invalid, closed).",
        labels=["reason"],
    )
    for reason, count in sorted(snapshot.rejected.items()):
        rejected.add_metric([reason], count)
    out: list[Metric] = [*families.values(), rejected]
    if snapshot.ledger is not None:
        pending = GaugeMetricFamily(
            "kiln_metering_pending_events", "Usage events not yet committed to the ledger."
        )
        pending.add_metric([], snapshot.ledger.pending_events)
        errors = CounterMetricFamily("kiln_metering_write_errors", "Ledger commits that failed (retried).")
        errors.add_metric([], snapshot.ledger.write_errors)
        out += [pending, errors]
    return out


class UsageCollector:
    def __init__(self, source: UsageSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from usage_families(self.source.snapshot())


class _Guarded:
    """Runs one collector; a failure is logged and counted instead of failing the whole scrape."""

    def __init__(
        self, name: str, inner: Collector | BuildMetrics | GpuCollector, errors: dict[str, int]
    ) -> None:
        self.name, self.inner, self.errors = name, inner, errors
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        try:
            return list(self.inner.collect())
        except Exception:
            log.exception("metrics collector %s failed", self.name)
            with self._lock:
                self.errors[self.name] = self.errors.get(self.name, 0) + 1
            return []


class ServerMetrics:
    """Everything ``/metrics`` exposes, in one registry.

    ``runtime``: the served models (None: no runtime metrics). ``usage``: the server's
    ``Metering`` (None: no usage metrics). ``gpu``: ``"auto"`` reads NVML when present, a
    :class:`GpuCollector` (tests: over a fake NVML) or None for no GPU metrics. ``process``: add
    ``process_*`` and ``python_info``. ``builds`` is where the model repository reports engines
    obtained and versions loaded.
    """

    def __init__(
        self,
        runtime: RuntimeSource | None = None,
        *,
        usage: UsageSource | None = None,
        gpu: GpuCollector | Literal["auto"] | None = "auto",
        process: bool = True,
        worker: str | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.worker = worker
        self.builds = BuildMetrics()
        self.collector_errors: dict[str, int] = {}
        parts: dict[str, Collector | BuildMetrics | GpuCollector] = {"builds": self.builds}
        if runtime is not None:
            parts["runtime"] = RuntimeCollector(runtime)
        if usage is not None:
            parts["usage"] = UsageCollector(usage)
        gpu_collector = GpuCollector.detect() if gpu == "auto" else gpu
        if gpu_collector is not None:
            parts["gpu"] = gpu_collector
        for name, part in parts.items():
            self.register(cast(Collector, _Guarded(name, part, self.collector_errors)))
        self.register(cast(Collector, _ErrorsCollector(self.collector_errors)))
        if process:
            self.register(ProcessCollector(registry=None))
            self.register(PlatformCollector(registry=None))

    def register(self, collector: Collector) -> None:
        """Add ``collector`` to the registry (with the ``worker`` label when this is a worker)."""
        if self.worker is not None:
            collector = cast(Collector, _WorkerLabelled(collector, self.worker))
        self.registry.register(collector)

    def text(self) -> str:
        """The exposition text (Prometheus text format 0.0.4) of one scrape."""
        return generate_latest(self.registry).decode()


class _WorkerLabelled:
    """Every sample of ``inner`` with ``worker=<index>`` added to its labels."""

    def __init__(self, inner: Collector, worker: str) -> None:
        self.inner, self.worker = inner, worker

    def collect(self) -> Iterator[Metric]:
        for metric in self.inner.collect():
            labelled = copy.copy(metric)
            labelled.samples = [
                sample._replace(labels={**sample.labels, "worker": self.worker}) for sample in metric.samples
            ]
            yield labelled


class _ErrorsCollector:
    def __init__(self, errors: dict[str, int]) -> None:
        self.errors = errors

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "kiln_metrics_collector_errors",
            "Scrapes in which a metrics collector failed.",
            labels=["collector"],
        )
        for name, count in sorted(dict(self.errors).items()):
            family.add_metric([name], count)
        yield family


def create_metrics_app(metrics: ServerMetrics) -> ASGIApp:
    """An ASGI app serving ``metrics`` (mount it at ``/metrics``; gzip when the client asks)."""
    return cast("ASGIApp", make_asgi_app(metrics.registry))


def metrics_text(metrics: ServerMetrics) -> str:
    """The exposition text of one scrape of ``metrics``."""
    return metrics.text()
