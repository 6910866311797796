from __future__ import annotations

from kiln._clock import FakeClock
from kiln.runtime.fallback import FallbackRouter, Health, Route


def router(has_fallback: bool = True) -> FallbackRouter:
    return FallbackRouter(has_fallback=has_fallback, probe_interval_s=5.0)


def test_a_healthy_primary_takes_the_traffic_and_needs_no_probe() -> None:
    r = router()
    assert (r.route, r.health) == (Route.PRIMARY, Health.HEALTHY)
    assert not r.probe_due(1e9)


def test_a_dead_primary_sends_traffic_to_the_fallback_and_is_probed_on_schedule() -> None:
    clock = FakeClock(100.0)
    r = router()
    change = r.primary_failed(dead=True, reason="boom", now_s=clock.now())
    assert change is not None
    assert change.rerouted
    assert (change.previous, change.route, change.health) == (Route.PRIMARY, Route.FALLBACK, Health.DEAD)
    assert r.route is Route.FALLBACK
    assert not r.probe_due(clock.advance(4.9))
    assert r.probe_due(clock.advance(0.1))


def test_a_failed_probe_waits_another_interval() -> None:
    r = router()
    r.primary_failed(dead=True, reason="boom", now_s=0.0)
    assert r.probe_result(ok=False, reason="still dead", now_s=5.0) is None
    assert not r.probe_due(9.9)
    assert r.probe_due(10.0)
    assert r.route is Route.FALLBACK


def test_a_good_probe_returns_traffic_to_the_primary() -> None:
    r = router()
    r.primary_failed(dead=False, reason="retries spent", now_s=0.0)
    assert r.health is Health.UNHEALTHY
    change = r.probe_result(ok=True, reason="probe passed", now_s=5.0)
    assert change is not None
    assert change.rerouted
    assert change.route is Route.PRIMARY
    assert r.health is Health.HEALTHY
    assert r.num_changes == 2
    assert r.last_change == change


def test_repeated_failures_do_not_count_as_new_changes_and_dead_is_sticky() -> None:
    r = router()
    assert r.primary_failed(dead=True, reason="a", now_s=0.0) is not None
    assert r.primary_failed(dead=True, reason="b", now_s=1.0) is None
    assert r.primary_failed(dead=False, reason="c", now_s=2.0) is None
    assert r.health is Health.DEAD
    assert r.num_changes == 1


def test_without_a_fallback_the_route_stays_primary_but_health_is_reported() -> None:
    r = router(has_fallback=False)
    change = r.primary_failed(dead=True, reason="boom", now_s=0.0)
    assert change is not None
    assert not change.rerouted
    assert (r.route, r.health, r.num_changes) == (Route.PRIMARY, Health.DEAD, 0)
    assert r.probe_due(5.0)


def test_a_probe_result_for_a_healthy_primary_changes_nothing() -> None:
    r = router()
    assert r.probe_result(ok=True, reason="x", now_s=0.0) is None
    assert r.num_changes == 0
