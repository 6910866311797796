"""The soak: windows over time, markers, swap windows and per-phase results, in virtual time."""

from __future__ import annotations

import asyncio

import pytest
from bench_fakes import SPECS, SerialTarget, VirtualTime

from kiln._clock import FakeClock
from kiln.bench.inputs import RequestPool
from kiln.bench.load import poisson_arrivals
from kiln.bench.soak import Marker, MarkerLog, Soak, SoakResult, SwapWindows, run_soak

POOL = RequestPool.random(SPECS, count=4)


def test_swap_windows_run_from_load_start_to_after_the_release() -> None:
    clock = FakeClock(start=0.0)
    log = MarkerLog(clock)
    windows = SwapWindows(log, after_s=1.0)
    clock.advance(2.0)
    log.mark("load-start", "load v2")
    assert windows(1.9) == "steady"
    assert windows(2.0) == "swap"
    assert windows(50.0) == "swap"  # still open: no release yet
    clock.advance(0.5)
    log.mark("active", "v2 active")
    clock.advance(0.1)
    log.mark("released", "v1 released")  # at 2.6: the window ends at 3.6
    assert windows(3.6) == "swap"
    assert windows(3.61) == "steady"
    clock.advance(5.0)
    log.mark("load-start", "load v3")  # at 7.6
    assert windows(7.0) == "steady"
    assert windows(7.7) == "swap"
    assert windows.windows() == [(2.0, 3.6), (7.6, float("inf"))]


def test_a_release_without_a_load_start_opens_no_window() -> None:
    clock = FakeClock(start=0.0)
    log = MarkerLog(clock)
    log.mark("released", "v0 released")
    assert SwapWindows(log)(0.5) == "steady"


def test_soak_windows_markers_and_phases() -> None:
    time = VirtualTime()
    target = SerialTarget(time, service_s=0.001, fail=lambda n: n == 5)
    log = MarkerLog(time.clock)
    swap = SwapWindows(log, after_s=0.5)

    async def run() -> SoakResult:
        async def driver() -> None:
            while time.clock.now() - log.origin < 1.2:
                await asyncio.sleep(0)
            log.mark("load-start", "load v2")
            while time.clock.now() - log.origin < 1.5:
                await asyncio.sleep(0)
            log.mark("released", "v1 released")

        spec = Soak(100.0, duration_s=3.0, window_s=1.0)
        result, _ = await asyncio.gather(
            run_soak(target, POOL, spec, markers=log, phase_of=swap, pacing=time.pacing()), driver()
        )
        return result

    result = asyncio.run(run())
    total = len(poisson_arrivals(100.0, 3.0, seed=0))
    assert result.step.ok + result.step.failed == total
    assert result.step.failed == 1
    assert [w.start_s for w in result.windows] == [0.0, 1.0, 2.0]
    assert sum(w.ok + w.failed for w in result.windows) == total
    kinds = [m.kind for m in result.markers]
    assert kinds[0] == "serving"  # the target reported version 1
    assert "load-start" in kinds
    assert "released" in kinds
    start = next(m.at_s for m in result.markers if m.kind == "load-start")
    assert start == pytest.approx(1.2, abs=0.05)
    assert set(result.phases) == {"steady", "swap"}
    swap_share = result.phases["swap"].ok / result.step.ok
    assert 0.15 < swap_share < 0.45  # about 0.8 s of 3 s
    assert result.phases["swap"].ok + result.phases["steady"].ok == result.step.ok
    again = SoakResult.from_json(result.to_json())
    assert again.to_json() == result.to_json()


def test_marker_json() -> None:
    marker = Marker(1.5, "active", "version 2 active")
    assert Marker.from_json(marker.to_json()) == marker
