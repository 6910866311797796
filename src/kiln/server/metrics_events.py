"""Metrics of events the runtime does not keep: engine-cache results, build and refit durations,
model load durations. The model repository reports them through :class:`BuildMetrics`; they are
exposed at scrape time like everything else on ``/metrics``.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterator, Mapping

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from kiln.errors import describe
from kiln.server.metrics_runtime import bucket_label

DURATION_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
)  # fmt: skip
"""Upper bounds for build, refit and load durations: a cache hit takes milliseconds, a TensorRT
build minutes."""

CACHE_RESULT: Mapping[str, str] = {
    "hit": "hit",
    "refit": "refit",
    "build": "miss",
    "calibration-reuse": "miss",
    "recalibrate": "miss",
}
"""How each build path counts in the engine cache: a hit, a refit (same structure, new weights)
or a miss (a full build). Keys: the cache's ``BuildPath`` values."""
BUILD_PATHS: tuple[str, ...] = tuple(CACHE_RESULT)


class _Histogram:
    __slots__ = ("counts", "sum_s")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS_S) + 1)
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip((*DURATION_BUCKETS_S, math.inf), self.counts, strict=True):
            total += count
            out.append((bucket_label(bound), float(total)))
        return out


class BuildMetrics:
    """Engine-cache and load events, thread-safe; a Prometheus collector of its own families.

    The model repository calls :meth:`observe_build` after each ``obtain_engine`` (with the
    report's ``path`` and ``build_seconds``) and :meth:`observe_load` when a version is READY.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._builds: dict[tuple[str, str], _Histogram] = {}
        self._loads: dict[str, _Histogram] = {}

    def observe_build(self, model: str, path: str, seconds: float) -> None:
        """One engine obtained for ``model`` by ``path`` (hit, build, refit, calibration-reuse,
        recalibrate) in ``seconds``. ``ValueError`` for an unknown path or a negative time."""
        if path not in CACHE_RESULT:
            raise ValueError(
                describe("unknown build path", seen=path, fix=f"use one of {', '.join(BUILD_PATHS)}")
            )
        _check_seconds(seconds)
        with self._lock:
            self._builds.setdefault((model, path), _Histogram()).observe(seconds)

    def observe_load(self, model: str, seconds: float) -> None:
        """One version of ``model`` loaded in ``seconds``: from the start of its load (engine from
        the cache, refit or build included) to READY (loaded, warmed up, checked)."""
        _check_seconds(seconds)
        with self._lock:
            self._loads.setdefault(model, _Histogram()).observe(seconds)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            builds = {k: (h.buckets(), h.sum_s) for k, h in sorted(self._builds.items())}
            loads = {k: (h.buckets(), h.sum_s) for k, h in sorted(self._loads.items())}
        lookups = CounterMetricFamily(
            "kiln_engine_cache_lookups",
            "Engines obtained, by cache result: hit, refit (new weights on a cached structure), miss.",
            labels=["model", "result"],
        )
        per_result: dict[tuple[str, str], float] = {}
        for (model, path), (buckets, _) in builds.items():
            key = (model, CACHE_RESULT[path])
            per_result[key] = per_result.get(key, 0.0) + buckets[-1][1]
        for (model, result), count in sorted(per_result.items()):
            lookups.add_metric([model, result], count)
        build = HistogramMetricFamily(
            "kiln_engine_build_duration_seconds",
            "Time to obtain an engine, by build path (hit, build, refit, calibration-reuse, recalibrate).",
            labels=["model", "path"],
        )
        for (model, path), (buckets, total) in builds.items():
            build.add_metric([model, path], buckets, total)
        load = HistogramMetricFamily(
            "kiln_model_load_duration_seconds",
            "Time from the start of a version's load to READY.",
            labels=["model"],
        )
        for model, (buckets, total) in loads.items():
            load.add_metric([model], buckets, total)
        yield from (lookups, build, load)


def _check_seconds(seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(describe("a duration must be finite and >= 0", seen=seconds, fix="pass seconds"))
