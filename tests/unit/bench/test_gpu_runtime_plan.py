"""The GPU benchmark's runtime stages: the rate ladder, capacities and the rendered report (pure
parts; the stages themselves run in tests/integration/bench/test_gpu_runtime_smoke.py)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the GPU benchmark's stages use the torch backend (the `torch` extra)")

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks" / "gpu"))

import _report_runtime
import _stage_runtime
from _stage_runtime import FULL, Point, capacity, next_step

from kiln.bench import LatencyHistogram, StepResult

PLAN = replace(FULL, start_rate=100.0, coarse_factor=2.0, fine_factor=1.25, max_rate=10_000.0)


def _walk(p99_at: float, small: float = 5.0, large: float = 10.0) -> list[Point]:
    """Run the ladder against a server whose p99 is ``rate / p99_at * 10`` ms (10 ms at ``p99_at``)."""
    history: list[Point] = []
    while (step := next_step(history, PLAN)) is not None and len(history) < 100:
        phase, rate = step
        p99 = rate / p99_at * 10.0
        history.append(Point(phase, rate, p99 <= small, p99 <= large))
    return history


def test_ladder_goes_coarse_then_fine_and_stops_after_two_misses() -> None:
    history = _walk(p99_at=1000.0)
    phases = [p.phase for p in history]
    assert phases[:5] == ["coarse"] * 5  # 100, 200, 400, 800, 1600 (the first over 10 ms)
    assert [p.rate for p in history[:5]] == [100.0, 200.0, 400.0, 800.0, 1600.0]
    fine = [p for p in history if p.phase == "fine"]
    assert fine[0].rate == pytest.approx(400.0 / 1.25)  # below the last coarse rate within 5 ms
    assert not fine[-1].within_large
    assert not fine[-2].within_large
    assert all(p.within_large for p in fine[:-2])
    assert any(p.within_small for p in fine)
    assert any(not p.within_small and p.within_large for p in fine)


def test_ladder_starts_fine_below_the_start_when_the_first_step_misses() -> None:
    history = [Point("coarse", 100.0, False, False)]
    assert next_step(history, PLAN) == ("fine", pytest.approx(100.0 / 1.25))


def test_ladder_stops_at_max_rate() -> None:
    history = _walk(p99_at=1e9)  # never misses
    assert max(p.rate for p in history) <= PLAN.max_rate
    assert history[-1].phase == "fine"


def _step(rate: float, served: float, p99_ms: float, failed: int = 0) -> StepResult:
    latency = LatencyHistogram()
    for _ in range(100):
        latency.record_ns(int(p99_ms * 1e6))
    errors = {"Overloaded": failed} if failed else {}
    return StepResult(f"{rate:g}/s", "open", 1.0, int(served), errors, latency, rate_per_s=rate)


def test_capacity_is_the_best_fine_step_within_the_bound() -> None:
    steps = [
        ("coarse", _step(4000, 3990, 3.0)),  # coarse steps never count
        ("fine", _step(1000, 1000, 2.0)),
        ("fine", _step(2000, 1995, 6.0)),
        ("fine", _step(3000, 2990, 9.0, failed=1)),  # a failure disqualifies
        ("fine", _step(3500, 3000, 30.0)),
    ]
    assert capacity(steps, 5.0).rate_per_s == 1000  # type: ignore[union-attr]
    assert capacity(steps, 10.0).rate_per_s == 2000  # type: ignore[union-attr]
    assert capacity(steps, 1.0) is None


def test_report_judges_the_targets() -> None:
    records = [
        {"kind": "runtime-ratio", "model": "cnn", "instances": 1, "repeat": 1, "bound_ms": 10.0,
         "batched_per_s": 6000.0, "batched_p99_ms": 9.0, "single_per_s": 1900.0, "single_p99_ms": 8.0,
         "ratio": 3.16, "met": True},
        {"kind": "runtime-ratio", "model": "cnn", "instances": 2, "repeat": 1, "bound_ms": 5.0,
         "batched_per_s": None, "batched_p99_ms": None, "single_per_s": 1900.0, "single_p99_ms": 4.0,
         "ratio": None, "met": None},
        {"kind": "runtime-swaps", "model": "cnn", "variant": "warm-up on batch 1", "rate": 1500.0,
         "swaps": 40, "ok": 120000, "failed": 0, "steady_p50_ms": 1.0, "steady_p99_ms": 3.0,
         "swap_p50_ms": 1.1, "swap_p99_ms": 4.2, "swap_max_ms": 12.0, "ratio": 1.4, "met": False},
    ]  # fmt: skip
    targets = _report_runtime.targets(records)
    assert targets[0].endswith("3.16x (met)")
    assert len(targets) == 2  # the ratio that could not be formed is not judged
    assert targets[1].endswith("1.40x, 0 failed of 120,000 (MISSED)")
    text = "\n".join(_report_runtime.tables(records))
    assert "| cnn | 2 | 1 | 5 | – | 1,900 (4.00) | – |" in text
    assert (
        "| cnn | warm-up on batch 1 | 1500 | 40 | 120,000 | 0 | 1.00 / 3.00 | 1.10 / 4.20 / 12.0 | 1.40x |"
        in text
    )


def test_stage_names() -> None:
    assert _stage_runtime.stage_runner("runtime") is not None
    assert _stage_runtime.stage_runner("runtime-swaps-resnet50") is not None
    assert _stage_runtime.stage_runner("runtimes") is None


def test_plan_overrides_from_options() -> None:
    options = (("runtime.swap_rate", "2000"), ("runtime.instances", "1"), ("compile", "eager"))
    plan = _stage_runtime.plan_for(False, options)
    assert plan.swap_rate == 2000.0
    assert plan.instances == (1,)
    assert plan.bounds_ms == FULL.bounds_ms
    assert _stage_runtime.backend_options(options) == (("compile", "eager"),)
    with pytest.raises(SystemExit, match="unknown runtime plan field 'swap_rat'"):
        _stage_runtime.plan_for(False, (("runtime.swap_rat", "1"),))
