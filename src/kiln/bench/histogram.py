"""An HDR-style latency histogram: log-linear buckets with a bounded relative error.

Values are recorded as integer nanoseconds. Below ``2**(significant_bits + 1)`` ns every value has
its own bucket (exact). Above, each power-of-two range ``[2**m, 2**(m+1))`` is cut into
``2**significant_bits`` equal buckets, so a bucket is never wider than ``2**-significant_bits`` of
its lower bound. A value read back from a bucket is the bucket's midpoint (clamped to the exact
min/max seen), which is within ``relative_error = 2**-(significant_bits + 1)`` of every value that
fell in it: 0.39 % with the default 7 bits. Memory grows with the number of distinct buckets hit
(a few hundred for a latency distribution), never with the number of samples.

``percentile(q)`` is the nearest-rank percentile: the value of rank ``ceil(q/100 * count)`` (numpy's
``method="inverted_cdf"``), read back from its bucket, hence within ``relative_error`` of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kiln.errors import ConfigError, describe

DEFAULT_SIGNIFICANT_BITS = 7
SUMMARY_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


def bucket_index(value_ns: int, significant_bits: int) -> int:
    """The bucket of a non-negative integer value (see the module docstring)."""
    if value_ns < (2 << significant_bits):
        return value_ns
    shift = value_ns.bit_length() - 1 - significant_bits
    return ((shift + 1) << significant_bits) + (value_ns >> shift) - (1 << significant_bits)


def bucket_bounds(index: int, significant_bits: int) -> tuple[int, int]:
    """``[low, high)`` of a bucket, in the recorded unit."""
    if index < (2 << significant_bits):
        return index, index + 1
    shift = (index >> significant_bits) - 1
    low = ((index & ((1 << significant_bits) - 1)) + (1 << significant_bits)) << shift
    return low, low + (1 << shift)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """What a report shows of one histogram, in milliseconds."""

    count: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "min_ms": self.min_ms,
            "mean_ms": self.mean_ms,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "p99.9_ms": self.p999_ms,
            "max_ms": self.max_ms,
        }


class LatencyHistogram:
    """Latencies in log-linear buckets. Not thread-safe: record from one thread (the event loop)."""

    __slots__ = ("_counts", "count", "max_ns", "min_ns", "significant_bits", "sum_ns")

    def __init__(self, significant_bits: int = DEFAULT_SIGNIFICANT_BITS) -> None:
        if not 1 <= significant_bits <= 16:
            raise ConfigError(
                describe("significant_bits is out of range", seen=significant_bits, fix="use 1..16")
            )
        self.significant_bits = significant_bits
        self._counts: dict[int, int] = {}
        self.count = 0
        self.sum_ns = 0
        self.min_ns = 0
        self.max_ns = 0

    @property
    def relative_error(self) -> float:
        """Largest relative error of a value read back (percentiles, min/max are exact)."""
        return 2.0 ** -(self.significant_bits + 1)

    def record(self, seconds: float) -> None:
        """Record one latency in seconds (negative values count as 0)."""
        self.record_ns(round(seconds * 1e9))

    def record_ns(self, value_ns: int, count: int = 1) -> None:
        value_ns = max(0, int(value_ns))
        index = bucket_index(value_ns, self.significant_bits)
        self._counts[index] = self._counts.get(index, 0) + count
        if self.count == 0 or value_ns < self.min_ns:
            self.min_ns = value_ns
        self.max_ns = max(self.max_ns, value_ns)
        self.count += count
        self.sum_ns += value_ns * count

    def merge(self, other: LatencyHistogram) -> None:
        """Add every observation of ``other`` into this histogram."""
        if other.significant_bits != self.significant_bits:
            raise ConfigError(
                describe(
                    "cannot merge histograms of different precision",
                    seen=f"{self.significant_bits} and {other.significant_bits} significant bits",
                    fix="record both with the same significant_bits",
                )
            )
        if other.count == 0:
            return
        for index, n in other._counts.items():
            self._counts[index] = self._counts.get(index, 0) + n
        self.min_ns = other.min_ns if self.count == 0 else min(self.min_ns, other.min_ns)
        self.max_ns = max(self.max_ns, other.max_ns)
        self.count += other.count
        self.sum_ns += other.sum_ns

    def copy(self) -> LatencyHistogram:
        twin = LatencyHistogram(self.significant_bits)
        twin.merge(self)
        return twin

    @property
    def mean_ns(self) -> float:
        return self.sum_ns / self.count if self.count else 0.0

    def percentile_ns(self, q: float) -> float:
        """The nearest-rank ``q``-th percentile (0 < q <= 100); 0.0 when empty."""
        if not 0.0 <= q <= 100.0:
            raise ConfigError(describe("percentile is out of range", seen=q, fix="use 0..100"))
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.count - 1e-9))
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            if seen >= rank:
                low, high = bucket_bounds(index, self.significant_bits)
                middle = low if high - low == 1 else (low + high - 1) / 2.0
                return float(min(max(middle, self.min_ns), self.max_ns))
        return float(self.max_ns)

    def percentile_ms(self, q: float) -> float:
        return self.percentile_ns(q) / 1e6

    def summary(self) -> LatencySummary:
        p50, p90, p99, p999 = (self.percentile_ms(q) for q in SUMMARY_PERCENTILES)
        return LatencySummary(
            self.count, self.min_ns / 1e6, self.mean_ns / 1e6, p50, p90, p99, p999, self.max_ns / 1e6
        )

    def buckets(self) -> list[tuple[int, int, int]]:
        """``(low_ns, high_ns, count)`` of every bucket hit, lowest first."""
        return [(*bucket_bounds(i, self.significant_bits), self._counts[i]) for i in sorted(self._counts)]

    def to_json(self) -> dict[str, object]:
        return {
            "significant_bits": self.significant_bits,
            "count": self.count,
            "sum_ns": self.sum_ns,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "buckets": [[i, self._counts[i]] for i in sorted(self._counts)],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> LatencyHistogram:
        """The histogram :meth:`to_json` wrote; ``ConfigError`` when the data is not one."""
        try:
            histogram = cls(int(data["significant_bits"]))  # type: ignore[call-overload]
            pairs = data["buckets"]
            assert isinstance(pairs, list)
            counts = {int(i): int(n) for i, n in pairs}
            histogram._counts = counts
            histogram.count = int(data["count"])  # type: ignore[call-overload]
            histogram.sum_ns = int(data["sum_ns"])  # type: ignore[call-overload]
            histogram.min_ns = int(data["min_ns"])  # type: ignore[call-overload]
            histogram.max_ns = int(data["max_ns"])  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(
                describe("not a latency histogram", seen=f"{type(exc).__name__}: {exc}", fix="pass to_json()")
            ) from None
        if sum(counts.values()) != histogram.count or any(n < 0 for n in counts.values()):
            raise ConfigError(
                describe("latency histogram counts do not add up", seen=histogram.count, fix="pass to_json()")
            )
        return histogram

    @classmethod
    def of(
        cls, seconds: Iterable[float], significant_bits: int = DEFAULT_SIGNIFICANT_BITS
    ) -> LatencyHistogram:
        histogram = cls(significant_bits)
        for value in seconds:
            histogram.record(value)
        return histogram

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        s = self.summary()
        return f"LatencyHistogram(count={s.count}, p50={s.p50_ms:.3f}ms, p99={s.p99_ms:.3f}ms)"
