"""A concurrency sweep that finds capacity: the next closed-loop concurrency from the steps so far.

A fixed list of concurrencies either stops before a server's capacity at the SLO (the CNN sweep
that ended at concurrency 8 with p99 a quarter of the bound) or wastes steps far past it. The
ladder here decides in pure code (steps in, a :class:`SweepDecision` out); the benchmark runs the
steps. Rules, in order:

1. Start at ``SweepPolicy.start``.
2. Stop once ``max_over_slo`` steps had p99 over the SLO (or no measurement): one such step may
   be noise, two mean the server is past its capacity.
3. Stop when throughput stops rising: the ``patience`` highest measured steps each served less
   than ``1 + min_gain`` times the best throughput of the steps below them.
4. After a step over the SLO, measure between it and the highest step within the SLO below it
   (the midpoint), while the two are more than ``resolution`` apart (ratio); then stop. When no
   step below it was within the SLO (the first step is over), go on up: rule 2 stops at the next.
5. Otherwise raise the concurrency by ``growth`` (at least by one), up to ``max_concurrency``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kiln.errors import ConfigError, describe


@dataclass(frozen=True, slots=True)
class SweepPolicy:
    """How the ladder climbs and when it stops.

    Fields:
        slo_ms: the p99 bound in milliseconds.
        start: the first concurrency.
        growth: factor between successive concurrencies while p99 is within the SLO.
        max_concurrency: never go past this.
        max_over_slo: stop after this many steps over the SLO (or without a measurement).
        min_gain: a step "raises" throughput when it serves at least ``1 + min_gain`` times the
            best of the lower steps.
        patience: stop after this many highest steps in a row did not raise throughput.
        resolution: refine between a step within the SLO and one over it until their
            concurrencies are within this ratio of each other.
    """

    slo_ms: float
    start: int = 1
    growth: float = 2.0
    max_concurrency: int = 256
    max_over_slo: int = 2
    min_gain: float = 0.05
    patience: int = 3
    resolution: float = 1.5

    def __post_init__(self) -> None:
        checks = {
            "slo_ms > 0": self.slo_ms > 0,
            "1 <= start <= max_concurrency": 1 <= self.start <= self.max_concurrency,
            "growth > 1": self.growth > 1,
            "max_over_slo >= 1": self.max_over_slo >= 1,
            "min_gain >= 0": self.min_gain >= 0,
            "patience >= 1": self.patience >= 1,
            "resolution > 1": self.resolution > 1,
        }
        broken = [rule for rule, ok in checks.items() if not ok]
        if broken:
            raise ConfigError(describe("sweep policy out of range", seen=f"{self!r}", fix=", ".join(broken)))


@dataclass(frozen=True, slots=True)
class SweepStep:
    """One measured step: its concurrency, throughput and p99 (``None``: no stable measurement)."""

    concurrency: int
    throughput_per_s: float
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class SweepDecision:
    """``concurrency`` to measure next, or ``None`` to stop; ``reason`` says why (for the log)."""

    concurrency: int | None
    reason: str


def within_slo(step: SweepStep, policy: SweepPolicy) -> bool:
    return step.p99_ms is not None and step.p99_ms <= policy.slo_ms


def next_concurrency(policy: SweepPolicy, steps: Sequence[SweepStep]) -> SweepDecision:
    """The next step of the ladder (see the module docstring for the rules)."""
    if not steps:
        return SweepDecision(policy.start, "first step")
    ordered = sorted(steps, key=lambda s: s.concurrency)
    over = [s for s in ordered if not within_slo(s, policy)]
    if len(over) >= policy.max_over_slo:
        seen = ", ".join(f"c={s.concurrency}" for s in over)
        return SweepDecision(None, f"p99 over the {policy.slo_ms:g} ms SLO at {seen}")
    stalled = _stalled(ordered, policy)
    if stalled:
        return SweepDecision(None, stalled)
    refined = _refine(ordered, over[0], policy) if over else None
    if refined is not None:
        return refined
    highest = ordered[-1].concurrency
    nxt = max(highest + 1, round(highest * policy.growth))
    if highest >= policy.max_concurrency:
        return SweepDecision(None, f"reached max_concurrency {policy.max_concurrency}")
    why = f"p99 within the SLO at c={highest}: raising"
    if over:
        why = f"p99 over the SLO only at the lowest step, c={over[0].concurrency}: going on up"
    return SweepDecision(min(nxt, policy.max_concurrency), why)


def _stalled(ordered: Sequence[SweepStep], policy: SweepPolicy) -> str | None:
    """Why throughput stopped rising (``None`` while it rises): each of the ``patience`` highest
    measured steps served less than ``1 + min_gain`` times the best below it."""
    measured = [s for s in ordered if s.p99_ms is not None]
    if len(measured) <= policy.patience:
        return None
    first = len(measured) - policy.patience
    for index in range(first, len(measured)):
        below = max(s.throughput_per_s for s in measured[:index])
        if measured[index].throughput_per_s >= below * (1 + policy.min_gain):
            return None
    best = max(s.throughput_per_s for s in measured[:first])
    seen = ", ".join(f"c={s.concurrency} {s.throughput_per_s:,.0f}/s" for s in measured[first:])
    return f"throughput stopped rising ({seen}; best below {best:,.0f}/s)"


def _refine(ordered: Sequence[SweepStep], first_over: SweepStep, policy: SweepPolicy) -> SweepDecision | None:
    """The midpoint below the first step over the SLO, the end when bracketed, or ``None`` when no
    step below it was within the SLO (then the ladder goes on up: one step over may be noise)."""
    lower = [s for s in ordered if s.concurrency < first_over.concurrency and within_slo(s, policy)]
    hi = first_over.concurrency
    if not lower:
        return None
    lo = lower[-1].concurrency
    mid = (lo + hi) // 2
    tried = {s.concurrency for s in ordered}
    if hi <= lo * policy.resolution or mid <= lo or mid in tried:
        return SweepDecision(None, f"capacity bracketed: p99 within the SLO at c={lo}, over at c={hi}")
    return SweepDecision(mid, f"p99 over the SLO at c={hi}: trying between c={lo} and c={hi}")
