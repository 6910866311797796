"""The online loop's Prometheus metrics, in base units.

``kiln_online_step_seconds{model, step}`` — the trainer's steps per export: ``train`` (Adam steps
since the previous export), ``export`` (weights into the ONNX graph), ``gate`` (holdout check);
``kiln_online_freshness_seconds{model}`` — from the store receiving the oldest event a published
version learned to its publication; ``kiln_online_exports_total{model, outcome}`` — published or
rejected; ``kiln_online_feedback_offset{model}`` — the offset learned up to.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kiln.train.report import ExportRecord

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class LoopMetrics:
    """Registers the loop's metrics in ``registry`` and records each export into them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.steps = Histogram(
            "kiln_online_step_seconds",
            "Duration of one online-loop step.",
            ["model", "step"],
            registry=registry,
            buckets=_BUCKETS,
        )
        self.freshness = Histogram(
            "kiln_online_freshness_seconds",
            "From receiving the oldest feedback event a version learned to publishing that version.",
            ["model"],
            registry=registry,
            buckets=_BUCKETS,
        )
        self.exports = Counter(
            "kiln_online_exports_total",
            "Exports by the trainer, by outcome.",
            ["model", "outcome"],
            registry=registry,
        )
        self.offset = Gauge(
            "kiln_online_feedback_offset", "Feedback offset learned up to.", ["model"], registry=registry
        )

    def observe(self, model: str, record: ExportRecord) -> None:
        training = record.training
        self.steps.labels(model, "train").observe(training.train_seconds)
        self.steps.labels(model, "export").observe(training.export_seconds)
        self.steps.labels(model, "gate").observe(training.gate_seconds)
        self.exports.labels(model, "published" if record.version else "rejected").inc()
        self.offset.labels(model).set(training.offset)
        if record.version:
            self.freshness.labels(model).observe(
                max(0.0, training.published_at_s - training.first_new_received_s)
            )
