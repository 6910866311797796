"""Range selection (pure numpy): histograms accumulated batch by batch, min/max, percentile and the
KL-divergence search, checked against a direct per-candidate computation."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compile.precision.calibration import (
    Histogram,
    HistogramCollector,
    compute_range,
    entropy_range,
    kl_divergences,
    minmax_range,
    percentile_range,
)
from kiln.compile.spec import CalibrationSpec
from kiln.errors import BuildError


def kl_by_definition(counts: np.ndarray, nq: int) -> np.ndarray:
    """KL(P_i || Q_i) for each candidate i, bin by bin, straight from the definition."""
    h = np.asarray(counts, dtype=np.float64)
    out = []
    for i in range(nq, len(h) + 1):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        p /= h.sum()
        q = np.zeros(i)
        for j in range(nq):
            lo, hi = -(-j * i // nq), -(-(j + 1) * i // nq)
            level = h[lo:hi]
            nonzero = level > 0
            if nonzero.any():
                q[lo:hi][nonzero] = level.sum() / nonzero.sum()
        q /= h[:i].sum()
        m = p > 0
        out.append(float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-12)))))
    return np.array(out)


@pytest.mark.parametrize(("num_bins", "nq", "seed"), [(40, 8, 0), (300, 16, 1), (2048, 128, 2)])
def test_kl_divergences_match_the_definition(num_bins: int, nq: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(4, size=num_bins) * (rng.random(num_bins) < 0.7)
    fast = kl_divergences(counts, nq)
    slow = kl_by_definition(counts, nq)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
    assert int(np.argmin(fast)) == int(np.argmin(slow))


def test_entropy_range_is_narrower_than_minmax_on_a_heavy_tail() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=200_000), [60.0, -55.0, 48.0] * 5]).astype(np.float32)
    hist = Histogram.of(values, num_bins=2048)
    low, high = minmax_range(hist)
    e_low, e_high = entropy_range(hist, 128)
    assert (low, high) == (float(values.min()), float(values.max()))
    assert low < e_low < 0 < e_high < high
    assert 2.0 < e_high < 10.0  # the bulk of a unit normal, not the outliers


def test_entropy_keeps_a_range_without_outliers_nearly_whole() -> None:
    values = np.linspace(-1.0, 1.0, 100_001)
    low, high = entropy_range(Histogram.of(values), 128)
    assert high >= 0.95
    assert low <= -0.95


def test_exact_zeros_do_not_move_the_entropy_threshold() -> None:
    rng = np.random.default_rng(3)
    positive = rng.exponential(size=50_000)
    with_relu_spike = np.concatenate([positive, np.zeros(50_000)])
    hist = Histogram.of(with_relu_spike)
    assert hist.zeros == 50_000
    assert hist.total == 100_000
    assert entropy_range(hist, 128)[1] == pytest.approx(entropy_range(Histogram.of(positive), 128)[1])


def test_percentile_clips_the_magnitudes() -> None:
    values = np.linspace(0.0, 1.0, 100_001)
    hist = Histogram.of(values, num_bins=1000)
    low, high = percentile_range(hist, 90.0)
    assert low == 0.0
    assert high == pytest.approx(0.9, abs=2e-3)
    assert percentile_range(hist, 100.0) == minmax_range(hist)


def test_clipping_never_widens_the_observed_range() -> None:
    values = np.array([0.5, 0.75, 1.0] * 100 + [3.0])
    hist = Histogram.of(values, num_bins=256)
    for low, high in [percentile_range(hist, 99.0), entropy_range(hist, 16)]:
        assert hist.low <= low <= high <= hist.high


def test_batch_by_batch_histogram_equals_one_histogram_at_the_final_width() -> None:
    rng = np.random.default_rng(4)
    batches = [rng.normal(scale=s, size=1000) for s in (0.1, 0.5, 3.0, 1.0, 20.0)]
    collector = HistogramCollector(512)
    for batch in batches:
        collector.add(batch)
    hist = collector.result()
    everything = np.abs(np.concatenate(batches))
    direct = np.bincount(np.minimum((everything * (512 / hist.width)).astype(np.int64), 511), minlength=512)
    np.testing.assert_array_equal(hist.counts, direct)
    assert hist.width >= everything.max()
    assert hist.width < 2.01 * everything.max()
    assert (hist.low, hist.high) == (min(b.min() for b in batches), max(b.max() for b in batches))


def test_minmax_only_collector_skips_the_histogram() -> None:
    collector = HistogramCollector(2048, histogram=False)
    collector.add(np.array([[-2.0, 1.0], [0.0, 7.5]]))
    collector.add(np.array([3.0]))
    hist = collector.result()
    assert minmax_range(hist) == (-2.0, 7.5)
    assert hist.total == 5


def test_all_zero_tensor_gives_a_zero_range() -> None:
    hist = Histogram.of(np.zeros(10))
    assert hist.width == 0.0
    assert entropy_range(hist, 128) == (0.0, 0.0)
    assert percentile_range(hist, 99.0) == (0.0, 0.0)


def test_non_finite_activations_name_the_tensor() -> None:
    collector = HistogramCollector(64, name="h1")
    with pytest.raises(BuildError, match="'h1'"):
        collector.add(np.array([1.0, np.nan]))


def test_empty_collector_is_an_error() -> None:
    with pytest.raises(BuildError, match="no values"):
        HistogramCollector(64, name="t").result()


def test_compute_range_follows_the_method() -> None:
    rng = np.random.default_rng(5)
    hist = Histogram.of(np.concatenate([rng.normal(size=20_000), [40.0]]))
    ranges = {
        m: compute_range(hist, CalibrationSpec(method=m, percentile=99.0))
        for m in ("minmax", "percentile", "entropy")
    }
    assert ranges["minmax"] == minmax_range(hist)
    assert ranges["percentile"] == percentile_range(hist, 99.0)
    assert ranges["entropy"] == entropy_range(hist, 128)
    assert len(set(ranges.values())) == 3
