from __future__ import annotations

import pytest

from kiln.errors import DeadlineExceeded, InvalidInput
from kiln.server.schedule import Schedule, plan_schedule


def plan(priority: object = None, timeout: object = None, remaining_s: float | None = None) -> Schedule:
    return plan_schedule(priority, timeout, levels=3, default_level=2, remaining_s=remaining_s)


def test_triton_level_1_is_the_highest_runtime_priority() -> None:
    assert plan(1).priority > plan(2).priority > plan(3).priority


def test_no_priority_and_priority_0_mean_the_default_level() -> None:
    assert plan(None).priority == plan(0).priority == plan(2).priority


@pytest.mark.parametrize("priority", [4, -1, 1.5, "high", True])
def test_priority_outside_the_levels_is_refused_naming_the_range(priority: object) -> None:
    with pytest.raises(InvalidInput, match="priority"):
        plan(priority)


def test_timeout_is_microseconds_and_0_means_none() -> None:
    assert plan(timeout=2500).timeout_s == pytest.approx(0.0025)
    assert plan(timeout=0).timeout_s is None
    assert plan().timeout_s is None


def test_negative_timeout_is_refused() -> None:
    with pytest.raises(InvalidInput, match="'timeout' is negative"):
        plan(timeout=-5)


def test_client_deadline_caps_the_timeout() -> None:
    assert plan(timeout=5_000_000, remaining_s=0.25).timeout_s == pytest.approx(0.25)
    assert plan(timeout=1000, remaining_s=0.25).timeout_s == pytest.approx(0.001)
    assert plan(remaining_s=0.5).timeout_s == pytest.approx(0.5)


def test_a_deadline_already_past_is_refused_at_once() -> None:
    with pytest.raises(DeadlineExceeded, match="deadline had passed"):
        plan(remaining_s=-0.01)
