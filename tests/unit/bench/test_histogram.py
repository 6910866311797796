"""LatencyHistogram: bucket layout, percentiles against numpy within the stated error, merge, JSON."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.bench.histogram import LatencyHistogram, bucket_bounds, bucket_index
from kiln.errors import ConfigError

latencies_ns = st.lists(st.integers(min_value=0, max_value=60 * 10**9), min_size=1, max_size=400)
quantiles = st.sampled_from([0.1, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 100.0])


@given(st.integers(min_value=0, max_value=2**50), st.integers(min_value=1, max_value=12))
def test_a_value_lies_in_its_bucket_and_buckets_are_narrow(value: int, bits: int) -> None:
    low, high = bucket_bounds(bucket_index(value, bits), bits)
    assert low <= value < high
    assert high - low == 1 or (high - low) / low <= 2.0**-bits


@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=1, max_value=10))
def test_bucket_indices_are_monotonic_and_contiguous(value: int, bits: int) -> None:
    index = bucket_index(value, bits)
    low, high = bucket_bounds(index, bits)
    assert bucket_index(high, bits) == index + 1
    if low > 0:
        assert bucket_index(low - 1, bits) == index - 1


@settings(max_examples=200, deadline=None)
@given(latencies_ns, quantiles)
def test_percentiles_match_numpy_within_the_relative_error(values: list[int], q: float) -> None:
    histogram = LatencyHistogram()
    for v in values:
        histogram.record_ns(v)
    want = float(np.percentile(np.array(values, dtype=np.float64), q, method="inverted_cdf"))
    got = histogram.percentile_ns(q)
    assert abs(got - want) <= histogram.relative_error * want + 1e-9


@settings(max_examples=100, deadline=None)
@given(latencies_ns)
def test_count_min_max_mean_are_exact(values: list[int]) -> None:
    histogram = LatencyHistogram()
    for v in values:
        histogram.record_ns(v)
    assert histogram.count == len(values)
    assert histogram.min_ns == min(values)
    assert histogram.max_ns == max(values)
    assert histogram.mean_ns == pytest.approx(np.mean(values))


@settings(max_examples=100, deadline=None)
@given(latencies_ns, latencies_ns)
def test_merge_equals_recording_everything_in_one(a: list[int], b: list[int]) -> None:
    left, right, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for v in a:
        left.record_ns(v)
        both.record_ns(v)
    for v in b:
        right.record_ns(v)
        both.record_ns(v)
    left.merge(right)
    assert left == both


@settings(max_examples=50, deadline=None)
@given(latencies_ns)
def test_json_round_trip(values: list[int]) -> None:
    histogram = LatencyHistogram(significant_bits=5)
    for v in values:
        histogram.record_ns(v)
    again = LatencyHistogram.from_json(histogram.to_json())
    assert again == histogram
    assert again.summary() == histogram.summary()


def test_summary_in_milliseconds() -> None:
    histogram = LatencyHistogram.of([0.001] * 99 + [0.1])
    s = histogram.summary()
    assert s.count == 100
    assert s.p50_ms == pytest.approx(1.0, rel=histogram.relative_error)
    assert s.p99_ms == pytest.approx(1.0, rel=histogram.relative_error)
    assert s.max_ms == pytest.approx(100.0)
    assert s.p999_ms == pytest.approx(100.0, rel=histogram.relative_error)


def test_empty_histogram_reads_zero() -> None:
    histogram = LatencyHistogram()
    assert histogram.percentile_ns(99) == 0.0
    assert histogram.summary().count == 0


def test_merge_refuses_other_precision() -> None:
    with pytest.raises(ConfigError, match="different precision"):
        LatencyHistogram(7).merge(LatencyHistogram.of([0.001], significant_bits=5))


@pytest.mark.parametrize(
    "data",
    [{}, {"significant_bits": 7, "count": 2, "sum_ns": 2, "min_ns": 1, "max_ns": 1, "buckets": [[1, 1]]}],
)
def test_from_json_refuses_what_is_not_a_histogram(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="histogram"):
        LatencyHistogram.from_json(data)


def test_bad_percentile_and_precision_are_refused() -> None:
    with pytest.raises(ConfigError, match="percentile"):
        LatencyHistogram().percentile_ns(101)
    with pytest.raises(ConfigError, match="significant_bits"):
        LatencyHistogram(0)
