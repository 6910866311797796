from __future__ import annotations

import pytest
from bench_steps import step

from kiln.bench.efficiency import capacity_at, efficiency_factor, ratio
from kiln.errors import ConfigError


def test_capacity_is_the_best_throughput_within_the_bound() -> None:
    steps = [step("c=1", 100, 2.0), step("c=4", 300, 4.0), step("c=16", 500, 9.0)]
    cap = capacity_at("kiln", steps, 5.0)
    assert cap.step == "c=4"
    assert cap.throughput_per_s == pytest.approx(300, rel=0.01)
    assert cap.p99_ms == pytest.approx(4.0, rel=0.05)


def test_steps_with_failures_do_not_count() -> None:
    cap = capacity_at("kiln", [step("c=1", 100, 2.0), step("c=4", 300, 3.0, failed=1)], 5.0)
    assert cap.step == "c=1"


def test_no_step_within_the_bound_says_how_close_it_came() -> None:
    cap = capacity_at("fastapi", [step("c=1", 100, 7.0), step("c=4", 200, 12.0)], 5.0)
    assert cap.step is None
    assert cap.throughput_per_s == 0.0
    assert cap.best_p99_ms == pytest.approx(7.0, rel=0.05)


def test_ratio_and_efficiency_factor() -> None:
    kiln = capacity_at("kiln", [step("c=8", 900, 4.0)], 5.0)
    base = capacity_at("unoptimized", [step("c=1", 300, 3.0)], 5.0)
    assert ratio(kiln, base).value == pytest.approx(3.0, rel=0.01)
    assert efficiency_factor(kiln, base) == pytest.approx(3.0, rel=0.01)
    none = capacity_at("unoptimized", [step("c=1", 300, 30.0)], 5.0)
    assert efficiency_factor(kiln, none) is None


def test_bounds_must_match_and_be_positive() -> None:
    with pytest.raises(ConfigError, match="different p99 bounds"):
        ratio(capacity_at("a", [], 5.0), capacity_at("b", [], 6.0))
    with pytest.raises(ConfigError, match="must be > 0"):
        capacity_at("a", [], 0.0)
