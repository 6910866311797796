"""The runtime's families, from real Stats snapshots and hand-made status reports."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from metrics_scrape import histogram_quantile, names, parse, value

from kiln.runtime.lifecycle import VersionState, VersionStatus
from kiln.runtime.results import ModelStatus, RuntimeStatus
from kiln.runtime.stats import LATENCY_BUCKETS_S, Counter, ModelStats, Stats
from kiln.server.metrics import ServerMetrics
from kiln.server.metrics_runtime import outcome_label


class FakeRuntime:
    """A RuntimeSource over real Stats objects and a status set by the test."""

    def __init__(self) -> None:
        self.model = Stats("ctr")
        self.v1 = Stats("ctr", "1", parent=self.model)
        self.v2 = Stats("ctr", "2", parent=self.model)
        self.versions = (
            VersionStatus("1", VersionState.FAILED, "NaN in outputs", False, 1.0),
            VersionStatus("1", VersionState.DRAINING, None, False, 2.0, memory_bytes=100),
            VersionStatus(
                "2",
                VersionState.READY,
                None,
                True,
                3.0,
                memory_bytes=300,
                route="fallback",
                primary_health="dead",
                has_fallback=True,
            ),
            VersionStatus("0", VersionState.UNLOADED, None, False, 0.5),
        )
        self.calls = 0

    def stats(self) -> Mapping[str, ModelStats]:
        self.calls += 1
        return {"ctr": ModelStats(self.model.snapshot(), (self.v1.snapshot(), self.v2.snapshot()))}

    def status(self) -> RuntimeStatus:
        model = ModelStatus(
            "ctr", True, False, "2", self.versions, queue_size=7, running_batches=2, memory_bytes=400
        )
        return RuntimeStatus(live=False, ready=True, models=(model,))


def success(stats: Stats, seconds: float, queue_s: float = 0.0) -> None:
    stats.record_success(
        queue_ns=int(queue_s * 1e9),
        input_ns=1000,
        infer_ns=int(seconds * 1e9) - 2000,
        output_ns=1000,
        total_ns=int(seconds * 1e9),
    )


@pytest.fixture
def runtime() -> FakeRuntime:
    rt = FakeRuntime()
    for _ in range(98):
        success(rt.v2, 200e-6, queue_s=50e-6)
    success(rt.v2, 0.1)
    success(rt.v1, 0.1)
    rt.v2.record_failure("Overloaded", 0)
    rt.v2.record_failure("DeadlineExceeded", 5_000_000)
    rt.model.record_failure("ModelNotFound", 0)  # before any version was pinned
    rt.v2.record_batch(rows=3, padded_rows=4, infer_ns=100)
    rt.v2.record_batch(rows=3, padded_rows=4, infer_ns=100)
    rt.v2.record_batch(rows=8, padded_rows=8, infer_ns=100)
    rt.v2.count(Counter.RETRIES, 2)
    rt.v1.count(Counter.INSTANCE_REBUILDS)
    rt.model.count(Counter.SWAPS)
    return rt


def scrape(runtime: FakeRuntime) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return parse(ServerMetrics(runtime, gpu=None, process=False).text())


def test_requests_by_model_and_outcome(runtime: FakeRuntime) -> None:
    s = scrape(runtime)
    assert value(s, "kiln_requests_total", model="ctr", outcome="success") == 100
    assert value(s, "kiln_requests_total", model="ctr", outcome="overloaded") == 1
    assert value(s, "kiln_requests_total", model="ctr", outcome="deadline_exceeded") == 1
    assert value(s, "kiln_requests_total", model="ctr", outcome="model_not_found") == 1


def test_requests_by_resident_version(runtime: FakeRuntime) -> None:
    s = scrape(runtime)
    assert value(s, "kiln_version_requests_total", model="ctr", version="2", outcome="success") == 99
    assert value(s, "kiln_version_requests_total", model="ctr", version="1", outcome="success") == 1
    assert value(s, "kiln_version_requests_total", model="ctr", version="2", outcome="overloaded") == 1


def test_latency_histograms_use_the_runtimes_buckets(runtime: FakeRuntime) -> None:
    s = scrape(runtime)
    les = sorted(float(dict(k[1])["le"]) for k in s if k[0] == "kiln_request_duration_seconds_bucket")
    assert les == [*LATENCY_BUCKETS_S, float("inf")]
    assert value(s, "kiln_request_duration_seconds_count", model="ctr") == 100
    assert value(s, "kiln_request_duration_seconds_bucket", model="ctr", le="+Inf") == 100
    assert value(s, "kiln_request_duration_seconds_sum", model="ctr") == pytest.approx(98 * 200e-6 + 0.2)
    assert value(s, "kiln_request_duration_seconds_bucket", model="ctr", le="0.000226") == 98
    assert 160e-6 < histogram_quantile(s, "kiln_request_duration_seconds", 0.5, model="ctr") <= 226e-6
    assert 0.0905 < histogram_quantile(s, "kiln_request_duration_seconds", 0.995, model="ctr") <= 0.128
    assert value(s, "kiln_queue_duration_seconds_bucket", model="ctr", le="4e-05") == 2  # the two unqueued
    assert value(s, "kiln_queue_duration_seconds_bucket", model="ctr", le="5.66e-05") == 100
    assert value(s, "kiln_compute_duration_seconds_count", model="ctr") == 100


def test_batch_sizes_rows_and_runs(runtime: FakeRuntime) -> None:
    s = scrape(runtime)
    assert value(s, "kiln_batch_size_rows_bucket", model="ctr", le="2.0") == 0
    assert value(s, "kiln_batch_size_rows_bucket", model="ctr", le="4.0") == 2
    assert value(s, "kiln_batch_size_rows_bucket", model="ctr", le="8.0") == 3
    assert value(s, "kiln_batch_size_rows_bucket", model="ctr", le="+Inf") == 3
    assert value(s, "kiln_batch_size_rows_sum", model="ctr") == 14
    assert value(s, "kiln_inferences_total", model="ctr") == 14
    assert value(s, "kiln_executions_total", model="ctr") == 3
    assert value(s, "kiln_padding_rows_total", model="ctr") == 2


def test_event_counters_and_compute_phases(runtime: FakeRuntime) -> None:
    s = scrape(runtime)
    assert value(s, "kiln_retries_total", model="ctr") == 2
    assert value(s, "kiln_instance_rebuilds_total", model="ctr") == 1
    assert value(s, "kiln_swaps_total", model="ctr") == 1
    assert value(s, "kiln_fallback_batches_total", model="ctr") == 0
    assert value(s, "kiln_routing_changes_total", model="ctr") == 0
    assert value(s, "kiln_compute_phase_seconds_total", model="ctr", phase="input") == pytest.approx(100e-6)


def test_status_gauges(runtime: FakeRuntime) -> None:
    s = scrape(runtime)
    assert value(s, "kiln_queue_depth", model="ctr") == 7
    assert value(s, "kiln_inflight_batches", model="ctr") == 2
    assert value(s, "kiln_model_memory_bytes", model="ctr") == 400
    assert value(s, "kiln_model_ready", model="ctr") == 1
    assert value(s, "kiln_model_live", model="ctr") == 0
    assert value(s, "kiln_runtime_live") == 0
    assert value(s, "kiln_runtime_ready") == 1


def test_version_state_is_one_for_the_latest_load_of_each_version(runtime: FakeRuntime) -> None:
    s = scrape(runtime)
    states = {
        (dict(k[1])["version"], dict(k[1])["state"]): v for k, v in s.items() if k[0] == "kiln_version_state"
    }
    assert {k for k, v in states.items() if v == 1} == {("1", "DRAINING"), ("2", "READY")}
    assert len(states) == 2 * 5  # every state but UNLOADED, for versions 1 and 2; version 0 is gone
    assert value(s, "kiln_version_active", model="ctr", version="2") == 1
    assert value(s, "kiln_version_active", model="ctr", version="1") == 0
    assert value(s, "kiln_version_memory_bytes", model="ctr", version="2") == 300
    assert value(s, "kiln_version_on_fallback", model="ctr", version="2") == 1
    assert value(s, "kiln_version_on_fallback", model="ctr", version="1") == 0
    assert value(s, "kiln_version_primary_health", model="ctr", version="2", health="dead") == 1
    assert value(s, "kiln_version_primary_health", model="ctr", version="2", health="healthy") == 0


def test_a_failed_version_reports_failed_and_no_memory() -> None:
    rt = FakeRuntime()
    rt.versions = (VersionStatus("9", VersionState.FAILED, "warm-up failed", False, 1.0),)
    s = scrape(rt)
    assert value(s, "kiln_version_state", model="ctr", version="9", state="FAILED") == 1
    assert not any(k[0] == "kiln_version_memory_bytes" for k in s)


def test_every_name_is_prefixed_and_in_base_units(runtime: FakeRuntime) -> None:
    families = names(scrape(runtime))
    assert all(n.startswith("kiln_") for n in families)
    assert not any(n.endswith(("_ms", "_us", "_ns")) for n in families)


def test_a_failing_collector_is_counted_and_the_rest_still_scraped(runtime: FakeRuntime) -> None:
    class Broken(FakeRuntime):
        def status(self) -> RuntimeStatus:
            raise RuntimeError("boom")

    metrics = ServerMetrics(Broken(), gpu=None, process=False)
    metrics.builds.observe_load("ctr", 1.0)
    s = parse(metrics.text())
    assert value(s, "kiln_metrics_collector_errors_total", collector="runtime") == 1
    assert value(s, "kiln_model_load_duration_seconds_count", model="ctr") == 1
    assert not any(k[0] == "kiln_requests_total" for k in s)


def test_scrapes_read_the_runtime_each_time(runtime: FakeRuntime) -> None:
    metrics = ServerMetrics(runtime, gpu=None, process=False)
    before = value(parse(metrics.text()), "kiln_requests_total", model="ctr", outcome="success")
    success(runtime.v2, 0.001)
    after = value(parse(metrics.text()), "kiln_requests_total", model="ctr", outcome="success")
    assert (before, after) == (100, 101)
    assert runtime.calls == 2


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("Overloaded", "overloaded"),
        ("DeadlineExceeded", "deadline_exceeded"),
        ("EngineFailed", "engine_failed"),
        ("NotReady", "not_ready"),
        ("OSError", "oserror"),
    ],
)
def test_outcome_labels(reason: str, label: str) -> None:
    assert outcome_label(reason) == label
