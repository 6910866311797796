from __future__ import annotations

import itertools
import threading

from kiln.runtime.stats import LATENCY_BUCKETS_S, Counter, Duration, Stats


def test_success_adds_triton_style_sums_and_histograms() -> None:
    stats = Stats("m", "1")
    stats.record_success(queue_ns=1_000, input_ns=10, infer_ns=2_000_000, output_ns=5, total_ns=3_000_000)
    stats.record_success(queue_ns=3_000, input_ns=20, infer_ns=1_000_000, output_ns=5, total_ns=1_000_000)
    snap = stats.snapshot()
    assert snap.success == Duration(2, 4_000_000)
    assert snap.queue == Duration(2, 4_000)
    assert snap.compute_infer == Duration(2, 3_000_000)
    assert snap.last_inference_ms > 0
    assert snap.request_latency.count == 2
    assert sum(snap.request_latency.counts) == 2
    assert snap.request_latency.sum_s == 0.004


def test_histogram_buckets_are_log_spaced_and_quantiles_read_upper_bounds() -> None:
    stats = Stats("m")
    for seconds in (15e-6, 15e-6, 15e-6, 1.0):
        stats.record_success(queue_ns=0, input_ns=0, infer_ns=0, output_ns=0, total_ns=int(seconds * 1e9))
    hist = stats.snapshot().request_latency
    assert LATENCY_BUCKETS_S[0] == 10e-6
    assert LATENCY_BUCKETS_S[2] / LATENCY_BUCKETS_S[0] == 2
    assert hist.counts[2] == 3
    assert hist.quantile(0.5) == LATENCY_BUCKETS_S[2] == 20e-6
    assert 1.0 <= hist.quantile(0.99) <= 2.0
    assert hist.cumulative()[-1] == 4


def test_latency_buckets_resolve_sub_millisecond_and_100ms_models() -> None:
    bounds = LATENCY_BUCKETS_S
    assert all(a < b for a, b in itertools.pairwise(bounds))
    assert max(b / a for a, b in itertools.pairwise(bounds)) < 1.43
    assert bounds[0] <= 50e-6
    assert bounds[-1] >= 10.0
    # a 150 ms p99 and a 100 ms p99 fall in different buckets, and so do 200 µs and 300 µs
    stats = Stats("m")
    for seconds in (0.100, 0.150, 200e-6, 300e-6):
        stats.record_success(queue_ns=0, input_ns=0, infer_ns=0, output_ns=0, total_ns=int(seconds * 1e9))
    assert sum(1 for c in stats.snapshot().request_latency.counts if c) == 4


def test_failures_batches_and_counters() -> None:
    stats = Stats("m")
    stats.record_failure("Overloaded", 0)
    stats.record_failure("Overloaded", 0)
    stats.record_batch(rows=3, padded_rows=4, infer_ns=100)
    stats.count(Counter.RETRIES, 2)
    snap = stats.snapshot()
    assert snap.failures == {"Overloaded": 2}
    assert snap.fail.count == 2
    assert (snap.execution_count, snap.inference_count, snap.padding_rows) == (1, 3, 1)
    assert snap.batch_sizes == {3: Duration(1, 100)}
    assert snap.counter(Counter.RETRIES) == 2
    assert snap.counter(Counter.SWAPS) == 0


def test_version_stats_feed_the_model_totals() -> None:
    model = Stats("m")
    v1, v2 = Stats("m", "1", parent=model), Stats("m", "2", parent=model)
    v1.record_batch(rows=1, padded_rows=1, infer_ns=1)
    v2.record_batch(rows=2, padded_rows=2, infer_ns=1)
    v2.count(Counter.INSTANCE_REBUILDS)
    assert model.snapshot().inference_count == 3
    assert model.snapshot().counter(Counter.INSTANCE_REBUILDS) == 1
    assert v1.snapshot().inference_count == 1


def test_concurrent_records_are_not_lost() -> None:
    stats = Stats("m")

    def hammer() -> None:
        for _ in range(2000):
            stats.count(Counter.RETRIES)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.snapshot().counter(Counter.RETRIES) == 8000
