from __future__ import annotations

import pytest
from runtime_fakes import FakeEngine, x_rows

from kiln.errors import ConfigError, EngineDead, EngineFailed
from kiln.runtime.faults import Fault, FaultInjector, FaultSpec, FaultyInstance


def wrapped(injector: FaultInjector) -> tuple[FakeEngine, FaultyInstance]:
    engine = FakeEngine(1.0)
    return engine, FaultyInstance(engine.create_instance(), injector)


@pytest.mark.parametrize(
    "bad",
    [{"fail_next": -1}, {"fail_fraction": 1.5}, {"delay_ms": -1.0}, {"dead_next": -2}, {"kill_next": -1}],
)
def test_bad_specs_are_refused_naming_the_value(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError) as info:
        FaultSpec(**bad)  # type: ignore[arg-type]
    assert str(next(iter(bad.values()))) in str(info.value)


def test_no_faults_run_the_real_instance() -> None:
    engine, instance = wrapped(FaultInjector())
    assert instance.run(x_rows(1))["y"][0, 0] == 1.0
    assert engine.num_runs == 1


def test_fail_next_fails_exactly_n_runs_without_touching_the_engine() -> None:
    injector = FaultInjector()
    injector.set(FaultSpec(fail_next=2))
    engine, instance = wrapped(injector)
    for _ in range(2):
        with pytest.raises(EngineFailed):
            instance.run(x_rows(1))
    instance.run(x_rows(1))
    assert engine.num_runs == 1
    assert injector.counts().failed == 2


def test_dead_next_raises_engine_dead() -> None:
    injector = FaultInjector()
    injector.set(FaultSpec(dead_next=1))
    _, instance = wrapped(injector)
    with pytest.raises(EngineDead):
        instance.run(x_rows(1))
    instance.run(x_rows(1))
    assert injector.counts().dead == 1


def test_a_killed_instance_stays_broken_until_replaced() -> None:
    injector = FaultInjector()
    injector.set(FaultSpec(kill_next=1))
    engine, instance = wrapped(injector)
    for _ in range(3):
        with pytest.raises(EngineFailed):
            instance.run(x_rows(1))
    fresh = FaultyInstance(engine.create_instance(), injector)
    assert fresh.run(x_rows(1))["y"].shape == (1, 4)
    assert injector.counts().killed == 1


def test_fraction_draws_are_seeded() -> None:
    def sequence(seed: int) -> list[Fault]:
        injector = FaultInjector()
        injector.set(FaultSpec(fail_fraction=0.5, seed=seed))
        return [injector.draw()[0] for _ in range(64)]

    assert sequence(3) == sequence(3)
    assert sequence(3) != sequence(4)
    assert 10 < sequence(3).count(Fault.FAIL) < 54


def test_delay_is_reported_and_clearing_stops_everything() -> None:
    injector = FaultInjector()
    injector.set(FaultSpec(delay_ms=2.5, fail_next=5))
    assert injector.draw() == (Fault.FAIL, 0.0025)
    injector.set(None)
    assert injector.draw() == (Fault.NONE, 0.0)
    assert injector.counts().delayed == 1
