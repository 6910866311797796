"""The version table: pinning, the one-step swap, eviction by the version policy, rollback history."""

from __future__ import annotations

import threading

import pytest
from runtime_fakes import FakeEngine

from kiln._clock import FakeClock
from kiln.errors import ModelNotFound, NotReady
from kiln.runtime.config import ModelConfig, VersionPolicy
from kiln.runtime.engine import LoadedVersion
from kiln.runtime.fallback import Route
from kiln.runtime.faults import FaultInjector
from kiln.runtime.lifecycle import VersionLifecycle, VersionState
from kiln.runtime.stats import Stats
from kiln.runtime.versions import VersionTable

CLOCK = FakeClock()


def ready(version: str, load_id: int) -> LoadedVersion:
    life = VersionLifecycle(version, CLOCK)
    life.move(VersionState.WARMING)
    life.move(VersionState.READY)
    return LoadedVersion(
        model="m",
        lifecycle=life,
        load_id=load_id,
        engine=FakeEngine(),
        fallback=None,
        config=ModelConfig(),
        injectors={Route.PRIMARY: FaultInjector(), Route.FALLBACK: FaultInjector()},
        clock=CLOCK,
        model_stats=Stats("m"),
    )


def table(keep: int = 1) -> VersionTable:
    return VersionTable("m", VersionPolicy(max_loaded_versions=keep))


def test_no_active_version_is_not_ready() -> None:
    with pytest.raises(NotReady, match="no active version"):
        table().pin(None)


def test_pins_count_per_version_and_the_swap_moves_new_requests_only() -> None:
    t = table()
    v1, v2 = ready("1", 1), ready("2", 2)
    t.activate(v1, push=True)
    pinned = t.pin(None)
    previous, evicted = t.activate(v2, push=True)
    assert previous is v1
    assert evicted == [v1]
    assert v1.lifecycle.state is VersionState.DRAINING
    assert pinned is v1
    assert v1.inflight == 1
    assert t.pin(None) is v2
    t.unpin(pinned)
    assert t.wait_unpinned(v1, timeout_s=0.0)


def test_draining_waits_until_the_last_pin_drops() -> None:
    t = table()
    v1 = ready("1", 1)
    t.activate(v1, push=True)
    pinned = t.pin(None)
    assert not t.wait_unpinned(v1, timeout_s=0.0)
    threading.Timer(0.01, t.unpin, args=(pinned,)).start()
    assert t.wait_unpinned(v1, timeout_s=5.0)


def test_keep_two_keeps_the_previous_version_ready_and_pinnable_by_name() -> None:
    t = table(keep=2)
    v1, v2, v3 = ready("1", 1), ready("2", 2), ready("3", 3)
    t.activate(v1, push=True)
    assert t.activate(v2, push=True)[1] == []
    assert t.pin("1") is v1
    assert t.activate(v3, push=True)[1] == [v1]
    assert t.find_ready("2") is v2


def test_a_reload_of_the_same_version_name_evicts_the_older_load_first() -> None:
    t = table(keep=2)
    old, other, again = ready("1", 1), ready("2", 2), ready("1", 3)
    t.activate(other, push=True)
    t.activate(old, push=True)
    assert t.activate(again, push=True)[1] == [old]
    assert t.pin("1") is again


def test_unknown_or_loading_versions_by_name() -> None:
    t = table()
    t.activate(ready("1", 1), push=True)
    with pytest.raises(ModelNotFound, match="ready versions: \\['1'\\]"):
        t.pin("9")
    t.add_record(2, VersionLifecycle("2", CLOCK))
    with pytest.raises(NotReady, match="still loading"):
        t.pin("2")


def test_rollback_history() -> None:
    t = table()
    with pytest.raises(ModelNotFound, match="no earlier version"):
        t.rollback_target()
    t.activate(ready("1", 1), push=True)
    t.activate(ready("2", 2), push=True)
    assert t.rollback_target() == "1"
    assert not t.pop_history("3")
    assert t.pop_history("1")
    with pytest.raises(ModelNotFound):
        t.rollback_target()


def test_retire_stops_admission_at_once() -> None:
    t = table(keep=2)
    v1, v2 = ready("1", 1), ready("2", 2)
    t.activate(v1, push=True)
    t.activate(v2, push=True)
    assert t.retire(None) == [v1, v2]
    assert t.active is None
    assert {v.lifecycle.state for v in (v1, v2)} == {VersionState.DRAINING}
    with pytest.raises(NotReady):
        t.pin(None)
