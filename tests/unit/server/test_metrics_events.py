from __future__ import annotations

import threading
from typing import get_args

import pytest
from metrics_scrape import parse, value

from kiln.compile.backends.base import BuildPath
from kiln.server.metrics import ServerMetrics
from kiln.server.metrics_events import CACHE_RESULT, DURATION_BUCKETS_S


def scrape(metrics: ServerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return parse(metrics.text())


def test_every_build_path_of_the_cache_is_known() -> None:
    assert set(CACHE_RESULT) == set(get_args(BuildPath))


def test_cache_results_and_build_durations() -> None:
    metrics = ServerMetrics(gpu=None, process=False)
    builds = metrics.builds
    builds.observe_build("ctr", "hit", 0.004)
    builds.observe_build("ctr", "hit", 0.006)
    builds.observe_build("ctr", "refit", 3.0)
    builds.observe_build("ctr", "build", 120.0)
    builds.observe_build("ctr", "recalibrate", 200.0)
    builds.observe_build("cnn", "build", 30.0)
    s = scrape(metrics)
    assert value(s, "kiln_engine_cache_lookups_total", model="ctr", result="hit") == 2
    assert value(s, "kiln_engine_cache_lookups_total", model="ctr", result="refit") == 1
    assert value(s, "kiln_engine_cache_lookups_total", model="ctr", result="miss") == 2
    assert value(s, "kiln_engine_cache_lookups_total", model="cnn", result="miss") == 1
    assert value(s, "kiln_engine_build_duration_seconds_bucket", model="ctr", path="hit", le="0.01") == 2
    assert value(s, "kiln_engine_build_duration_seconds_bucket", model="ctr", path="refit", le="2.5") == 0
    assert value(s, "kiln_engine_build_duration_seconds_bucket", model="ctr", path="refit", le="5.0") == 1
    assert value(s, "kiln_engine_build_duration_seconds_sum", model="ctr", path="build") == 120.0
    assert value(s, "kiln_engine_build_duration_seconds_count", model="ctr", path="recalibrate") == 1


def test_load_durations() -> None:
    metrics = ServerMetrics(gpu=None, process=False)
    metrics.builds.observe_load("ctr", 0.8)
    metrics.builds.observe_load("ctr", 4000.0)  # beyond the last bound
    s = scrape(metrics)
    assert value(s, "kiln_model_load_duration_seconds_bucket", model="ctr", le="1.0") == 1
    assert (
        value(s, "kiln_model_load_duration_seconds_bucket", model="ctr", le=repr(DURATION_BUCKETS_S[-1])) == 1
    )
    assert value(s, "kiln_model_load_duration_seconds_bucket", model="ctr", le="+Inf") == 2
    assert value(s, "kiln_model_load_duration_seconds_count", model="ctr") == 2


def test_bad_observations_are_refused() -> None:
    builds = ServerMetrics(gpu=None, process=False).builds
    with pytest.raises(ValueError, match=r"unknown build path.*cached.*hit, refit, build"):
        builds.observe_build("ctr", "cached", 1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        builds.observe_build("ctr", "hit", -1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        builds.observe_load("ctr", float("nan"))


def test_observations_from_many_threads_are_all_counted() -> None:
    metrics = ServerMetrics(gpu=None, process=False)

    def hammer() -> None:
        for _ in range(500):
            metrics.builds.observe_build("ctr", "hit", 0.001)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert value(scrape(metrics), "kiln_engine_cache_lookups_total", model="ctr", result="hit") == 2000
