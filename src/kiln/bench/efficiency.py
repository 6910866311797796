"""Throughput at a p99 bound, ratios between variants, and the efficiency factor: pure functions.

A variant's capacity at a bound is the highest throughput among its load steps whose p99 latency
stayed within the bound (and that failed no request). kiln's **efficiency factor** is its capacity
divided by the ``unoptimized`` baseline's at the same bound on the same target: the factor EPU
metering charges at (see :mod:`kiln.cache.efficiency` for where it is stored).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kiln.bench.results import StepResult
from kiln.errors import ConfigError, describe


@dataclass(frozen=True)
class Capacity:
    """The best step of one variant within a p99 bound (``step`` ``None``: no step stayed within).

    ``best_p99_ms`` is the lowest p99 any successful step reached (to say how far off the bound is).
    """

    variant: str
    bound_ms: float
    throughput_per_s: float
    step: str | None
    p99_ms: float | None
    best_p99_ms: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "variant": self.variant,
            "bound_ms": self.bound_ms,
            "throughput_per_s": self.throughput_per_s,
            "step": self.step,
            "p99_ms": self.p99_ms,
            "best_p99_ms": self.best_p99_ms,
        }


@dataclass(frozen=True)
class Ratio:
    """``numerator``'s capacity ÷ ``denominator``'s at one bound (``None`` when either has none)."""

    numerator: str
    denominator: str
    bound_ms: float
    value: float | None

    def to_json(self) -> dict[str, object]:
        return {"numerator": self.numerator, "denominator": self.denominator,
                "bound_ms": self.bound_ms, "value": self.value}  # fmt: skip


@dataclass(frozen=True)
class Point:
    """One load step as any tool measured it: its label, throughput and p99 (failed steps excluded)."""

    label: str
    throughput_per_s: float
    p99_ms: float


def capacity_at(variant: str, steps: Iterable[StepResult], bound_ms: float) -> Capacity:
    """The highest throughput among ``steps`` with p99 ≤ ``bound_ms`` and no failed request."""
    points = [
        Point(s.label, s.throughput_per_s, s.summary.p99_ms) for s in steps if s.ok > 0 and not s.failed
    ]
    return capacity_of(variant, points, bound_ms)


def capacity_of(variant: str, points: Iterable[Point], bound_ms: float) -> Capacity:
    """The highest throughput among ``points`` with p99 ≤ ``bound_ms`` (steps of another tool, such
    as perf_analyzer's rows)."""
    if not bound_ms > 0:
        raise ConfigError(describe("the p99 bound must be > 0 ms", seen=bound_ms, fix="e.g. --slo-ms 5"))
    best: Point | None = None
    lowest: float | None = None
    for point in points:
        lowest = point.p99_ms if lowest is None else min(lowest, point.p99_ms)
        if point.p99_ms <= bound_ms and (best is None or point.throughput_per_s > best.throughput_per_s):
            best = point
    if best is None:
        return Capacity(variant, bound_ms, 0.0, None, None, lowest)
    return Capacity(variant, bound_ms, best.throughput_per_s, best.label, best.p99_ms, lowest)


def ratio(numerator: Capacity, denominator: Capacity) -> Ratio:
    """``numerator.throughput / denominator.throughput`` at the same bound."""
    if numerator.bound_ms != denominator.bound_ms:
        seen = f"{numerator.bound_ms} vs {denominator.bound_ms} ms"
        raise ConfigError(describe("capacities at different p99 bounds cannot be compared", seen=seen))
    value = None
    if numerator.throughput_per_s > 0 and denominator.throughput_per_s > 0:
        value = numerator.throughput_per_s / denominator.throughput_per_s
    return Ratio(numerator.variant, denominator.variant, numerator.bound_ms, value)


def capacities(variants: Mapping[str, Sequence[StepResult]], bound_ms: float) -> dict[str, Capacity]:
    """:func:`capacity_at` of every variant of a report."""
    return {name: capacity_at(name, steps, bound_ms) for name, steps in variants.items()}


def efficiency_factor(kiln: Capacity, unoptimized: Capacity) -> float | None:
    """kiln's capacity ÷ the unoptimized baseline's; ``None`` when either has no step within the bound."""
    return ratio(kiln, unoptimized).value
