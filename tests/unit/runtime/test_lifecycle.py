from __future__ import annotations

import itertools

import pytest

from kiln._clock import FakeClock
from kiln.runtime.lifecycle import (
    TRANSITIONS,
    LifecycleError,
    VersionLifecycle,
    VersionState,
    is_final,
    transition,
)

S = VersionState
ALLOWED = {
    (S.LOADING, S.WARMING),
    (S.LOADING, S.FAILED),
    (S.WARMING, S.READY),
    (S.WARMING, S.FAILED),
    (S.READY, S.DRAINING),
    (S.DRAINING, S.UNLOADED),
}


def test_the_table_holds_exactly_the_documented_moves() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(VersionState)


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_moves_return_the_target(current: VersionState, target: VersionState) -> None:
    assert transition(current, target) is target


@pytest.mark.parametrize(
    ("current", "target"),
    [pair for pair in itertools.product(VersionState, VersionState) if pair not in ALLOWED],
)
def test_every_other_move_raises_naming_both_states(current: VersionState, target: VersionState) -> None:
    with pytest.raises(LifecycleError) as info:
        transition(current, target)
    assert str(current) in str(info.value)
    assert str(target) in str(info.value)


def test_failed_and_unloaded_are_final() -> None:
    assert {s for s in VersionState if is_final(s)} == {S.FAILED, S.UNLOADED}


def test_a_version_walks_to_ready_and_out_with_times_from_the_clock() -> None:
    clock = FakeClock(100.0)
    life = VersionLifecycle("7", clock)
    assert (life.state, life.since_s) == (S.LOADING, 100.0)
    clock.advance(2.0)
    life.move(S.WARMING)
    life.move(S.READY)
    clock.advance(1.0)
    life.move(S.DRAINING, "replaced")
    life.move(S.UNLOADED)
    assert (life.state, life.reason, life.since_s) == (S.UNLOADED, "replaced", 103.0)


def test_a_failed_version_keeps_its_reason_and_cannot_be_revived() -> None:
    life = VersionLifecycle("8", FakeClock())
    life.move(S.FAILED, "warm-up failed: boom")
    with pytest.raises(LifecycleError):
        life.move(S.READY)
    assert (life.state, life.reason) == (S.FAILED, "warm-up failed: boom")
