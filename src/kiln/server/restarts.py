"""When a dead worker process is started again: exponential backoff, forgiven after a good run.

Pure decision code for :mod:`kiln.server.workers`: the time a worker started and died in, a
:class:`RestartPlan` out (how long to wait, how many failures in a row so far).
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.errors import ConfigError, describe


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    """``initial_s``: wait before the first restart; each failure in a row doubles it, up to
    ``max_s``. A worker that ran ``reset_after_s`` or longer before dying starts the count again."""

    initial_s: float = 0.5
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ConfigError(
                describe(
                    f"backoff initial_s {self.initial_s} must be > 0 and <= max_s {self.max_s}",
                    fix="e.g. initial_s=0.5, max_s=30",
                )
            )
        if self.reset_after_s <= 0:
            raise ConfigError(describe("backoff reset_after_s must be > 0", seen=self.reset_after_s))


@dataclass(frozen=True, slots=True)
class RestartPlan:
    """Start the worker again after ``delay_s``; ``failures``: deaths in a row, this one included."""

    delay_s: float
    failures: int


def plan_restart(
    *, started_s: float, died_s: float, failures_before: int, backoff: BackoffConfig
) -> RestartPlan:
    """The restart of a worker that started at ``started_s`` and died at ``died_s`` after
    ``failures_before`` deaths in a row."""
    failures = 1 if died_s - started_s >= backoff.reset_after_s else failures_before + 1
    delay = min(backoff.max_s, backoff.initial_s * 2 ** min(failures - 1, 62))
    return RestartPlan(delay_s=delay, failures=failures)
