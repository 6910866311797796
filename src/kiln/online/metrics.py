"""The serving side of the online loop in Prometheus (base units).

``kiln_online_publish_to_serving_seconds{model}`` — from the trainer publishing a version to that
version serving; ``kiln_online_serving_freshness_seconds{model}`` — from the store receiving the
oldest feedback event the version newly learned to the version serving;
``kiln_online_versions_total{model, outcome}`` — versions ``serving``, ``rejected`` by the gate,
``failed`` (build or load), or ``superseded`` (built while a newer one came to serve);
``kiln_online_builds_total{model, path}`` — how each served
version's engine came from the cache (``hit``, ``refit``, ``calibration-reuse``, ``build``...);
``kiln_online_serving_step_seconds{model, step}`` — each step of a new version's way: ``check``
(the gate, every version), ``build`` (the engine from the cache) and ``ready`` (from the start of
the build to serving), for the versions that went on to serve.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)


class ServingLoopMetrics:
    """Registers the serving loop's metrics in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.publish_to_serving = Histogram(
            "kiln_online_publish_to_serving_seconds",
            "From the trainer publishing a version to that version serving.",
            ["model"],
            registry=registry,
            buckets=_BUCKETS,
        )
        self.freshness = Histogram(
            "kiln_online_serving_freshness_seconds",
            "From receiving the oldest feedback event a version newly learned to that version serving.",
            ["model"],
            registry=registry,
            buckets=_BUCKETS,
        )
        self.steps = Histogram(
            "kiln_online_serving_step_seconds",
            "A new version's steps to serving: check (the gate), build, ready (build start to serving).",
            ["model", "step"],
            registry=registry,
            buckets=_STEP_BUCKETS,
        )
        self.versions = Counter(
            "kiln_online_versions",
            "New versions by outcome: serving, rejected (by the gate), failed (build or load), superseded.",
            ["model", "outcome"],
            registry=registry,
        )
        self.builds = Counter(
            "kiln_online_builds",
            "How each served version's engine came from the cache.",
            ["model", "path"],
            registry=registry,
        )
