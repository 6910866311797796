"""Activation range selection for INT8 calibration: pure numpy, no model, no I/O.

A :class:`HistogramCollector` accumulates one tensor's values batch by batch into a
:class:`Histogram` of absolute values (plus the exact min and max). The range functions turn a
histogram into the (low, high) range the quantizer maps onto the integer grid:

- :func:`minmax_range`: the observed extremes.
- :func:`percentile_range`: clips ``|x|`` at a percentile of the magnitudes.
- :func:`entropy_range`: TensorRT-style KL-divergence search. Every candidate threshold
  ``i`` (in bins) folds the fine histogram ``P = hist[:i]`` (values beyond ``i`` added to the last
  bin) into ``num_quantized_bins`` levels, expands it back to ``Q``, and the threshold minimising
  ``KL(P || Q)`` wins.

The clipping methods never widen a range: a threshold ``t`` gives ``(max(low, -t), min(high, t))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kiln.compile.spec import CalibrationSpec
from kiln.errors import BuildError, describe
from kiln.types import Array

Range = tuple[float, float]
_EPS = 1e-12
_WIDTH_MARGIN = 1.0 + 2.0**-20


@dataclass(frozen=True)
class Histogram:
    """Counts of ``|x|`` in ``len(counts)`` equal bins over ``[0, width]``, with the exact extremes.

    Exact zeros are counted apart in ``zeros``: every quantization grid holds 0 exactly, so they
    carry no error whatever the range, and the spike a ReLU leaves at 0 would otherwise pull the
    entropy threshold down. ``width`` is 0 when every value seen was 0. Bin ``k`` covers
    ``[k, k+1) * width / num_bins``; the last bin also holds ``width`` itself.
    """

    counts: npt.NDArray[np.int64]
    width: float
    low: float
    high: float
    zeros: int = 0

    @property
    def num_bins(self) -> int:
        return len(self.counts)

    @property
    def total(self) -> int:
        """Every value seen, zeros included."""
        return int(self.counts.sum()) + self.zeros

    @classmethod
    def of(cls, values: Array, num_bins: int = 2048) -> Histogram:
        """The histogram of one array (a convenience over :class:`HistogramCollector`)."""
        collector = HistogramCollector(num_bins)
        collector.add(values)
        return collector.result()


class HistogramCollector:
    """Accumulates one tensor's values batch by batch.

    The first non-zero batch sets the histogram width to its largest magnitude. A later batch with a larger
    magnitude grows the width by a power of two and merges neighbouring bins, so bin edges stay
    exact and no value is ever re-binned approximately; the final histogram spans between half and
    all of its bins. With ``histogram=False`` only the extremes are kept (enough for min/max).
    """

    def __init__(self, num_bins: int = 2048, *, histogram: bool = True, name: str = "tensor") -> None:
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, seen {num_bins}")
        self.name = name
        self._keep_histogram = histogram
        self._counts = np.zeros(num_bins if histogram else 1, dtype=np.int64)
        self._width = 0.0
        self._zeros = 0
        self._low = np.inf
        self._high = -np.inf

    def add(self, values: Array) -> None:
        flat = np.asarray(values).ravel()
        if flat.dtype not in (np.float32, np.float64):
            flat = flat.astype(np.float32)
        if flat.size == 0:
            return
        low, high = float(flat.min()), float(flat.max())  # NaN and Inf show up in the extremes
        if not (np.isfinite(low) and np.isfinite(high)):
            raise BuildError(
                describe(
                    f"calibration produced NaN or Inf in tensor {self.name!r}",
                    fix="check the calibration samples (finite, in the range the model was trained on)",
                )
            )
        self._low, self._high = min(self._low, low), max(self._high, high)
        if not self._keep_histogram:
            self._counts[0] += flat.size
            return
        zeros = flat.size - int(np.count_nonzero(flat))
        self._zeros += zeros
        largest = max(-low, high)
        if largest == 0.0:
            return
        self._grow_to(largest)
        num_bins = len(self._counts)
        index = (np.abs(flat) * (num_bins / self._width)).astype(np.int64)
        counts = np.bincount(np.minimum(index, num_bins - 1), minlength=num_bins)
        counts[0] -= zeros  # exact zeros are counted apart
        self._counts += counts

    def _grow_to(self, largest: float) -> None:
        if largest < self._width:
            return
        if self._width == 0.0:
            # a hair above the largest value, so no value ever lands on the clipped top edge and
            # merging bins later gives exactly the histogram a single pass would have given
            self._width = largest * _WIDTH_MARGIN
            return
        factor = 1
        while self._width * factor <= largest:
            factor *= 2
        num_bins = len(self._counts)
        merged = np.add.reduceat(self._counts, np.arange(0, num_bins, factor))
        self._counts = np.zeros(num_bins, dtype=np.int64)
        self._counts[: len(merged)] = merged
        self._width *= factor

    def result(self) -> Histogram:
        if self._low > self._high:
            raise BuildError(
                describe(
                    f"no values were collected for tensor {self.name!r}",
                    fix="give at least one calibration sample",
                )
            )
        return Histogram(self._counts.copy(), self._width, self._low, self._high, self._zeros)


def minmax_range(hist: Histogram) -> Range:
    """The observed extremes."""
    return (hist.low, hist.high)


def _clip(hist: Histogram, threshold: float) -> Range:
    return (max(hist.low, -threshold), min(hist.high, threshold))


def percentile_range(hist: Histogram, percentile: float) -> Range:
    """Clip ``|x|`` at the bin edge where ``percentile`` % of the magnitudes lie below."""
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], seen {percentile}")
    if hist.width == 0.0 or percentile == 100.0:
        return minmax_range(hist)
    cumulative = hist.zeros + np.cumsum(hist.counts)
    k = int(np.searchsorted(cumulative, cumulative[-1] * percentile / 100.0, side="left"))
    return _clip(hist, (k + 1) * hist.width / hist.num_bins)


def entropy_range(hist: Histogram, num_quantized_bins: int = 128) -> Range:
    """The threshold minimising KL(P || Q) between the fine and the quantized distribution.

    Candidates are every bin count ``i`` from ``num_quantized_bins`` to ``num_bins``. Bins of the
    reference ``P`` that are empty stay empty in ``Q``; a non-empty bin of ``P`` that ``Q`` leaves
    empty (outliers folded into an empty last bin) costs as if ``Q`` held a tiny ``1e-12`` there.
    """
    if num_quantized_bins < 2:
        raise ValueError(f"num_quantized_bins must be >= 2, seen {num_quantized_bins}")
    if hist.width == 0.0 or hist.num_bins <= num_quantized_bins:
        return minmax_range(hist)
    divergence = kl_divergences(hist.counts, num_quantized_bins)
    best = num_quantized_bins + int(np.argmin(divergence))
    return _clip(hist, best * hist.width / hist.num_bins)


def kl_divergences(counts: Array, num_quantized_bins: int) -> npt.NDArray[np.float64]:
    """``KL(P_i || Q_i)`` for every candidate ``i`` in ``num_quantized_bins .. len(counts)``.

    ``P_i`` is ``counts[:i]`` with the counts beyond ``i`` added to bin ``i - 1``, normalised.
    ``Q_i`` merges ``counts[:i]`` into ``num_quantized_bins`` levels (level ``j`` covers bins
    ``[ceil(j*i/nq), ceil((j+1)*i/nq))``) and spreads each level's count evenly over its non-empty
    bins, normalised. The sum over bins is regrouped per level, so one candidate costs O(nq), not
    O(num_bins): ``sum_k p_k log p_k`` comes from a running sum of ``h log h``, and the cross term
    ``sum_k p_k log q_k`` is constant within a level except in the last bin, which is corrected.
    """
    h = np.asarray(counts, dtype=np.float64)
    nq = num_quantized_bins
    total = h.sum()
    cands = np.arange(nq, len(h) + 1)
    csum = np.concatenate([[0.0], np.cumsum(h)])
    cnonzero = np.concatenate([[0.0], np.cumsum(h > 0)])
    hlogh = np.concatenate([[0.0], np.cumsum(np.where(h > 0, h * np.log(np.maximum(h, 1.0)), 0.0))])
    kept = csum[cands]  # C_i: counts inside the candidate range
    safe_kept = np.maximum(kept, _EPS)
    # sum_k p_k log p_k over k < i, without the outliers folded into the last bin
    self_term = (hlogh[cands] - kept * np.log(total)) / total
    bounds = (np.arange(nq + 1)[None, :] * cands[:, None] + nq - 1) // nq
    level_sum = np.diff(csum[bounds], axis=1)
    level_nonzero = np.maximum(np.diff(cnonzero[bounds], axis=1), 1.0)
    level_q = level_sum / (level_nonzero * safe_kept[:, None])
    cross = np.where(level_sum > 0, level_sum * np.log(np.maximum(level_q, _EPS)), 0.0).sum(axis=1) / total
    # the last kept bin also holds the outliers: swap its term for the one with the outliers
    last = h[cands - 1]
    q_last = np.where(last > 0, level_q[:, -1], _EPS)
    p_last_old = last / total
    p_last_new = (last + total - kept) / total
    old = np.where(last > 0, p_last_old * (np.log(np.maximum(p_last_old, _EPS)) - np.log(q_last)), 0.0)
    new = np.where(p_last_new > 0, p_last_new * (np.log(np.maximum(p_last_new, _EPS)) - np.log(q_last)), 0.0)
    return np.asarray(self_term - cross - old + new, dtype=np.float64)


def compute_range(hist: Histogram, spec: CalibrationSpec) -> Range:
    """The range ``spec.method`` picks for one histogram."""
    if spec.method == "minmax":
        return minmax_range(hist)
    if spec.method == "percentile":
        return percentile_range(hist, spec.percentile)
    return entropy_range(hist, spec.num_quantized_bins)
