from __future__ import annotations

from kiln.repository.control import IndexEntry
from kiln.server.health import plan_readiness


def test_not_ready_before_start_and_while_draining() -> None:
    assert plan_readiness(started=False, draining=False, index=[], serving={}).reason == "starting"
    draining = plan_readiness(started=True, draining=True, index=[], serving={"m": True})
    assert not draining.ready
    assert draining.reason == "shutting down"


def test_ready_when_every_runtime_model_serves() -> None:
    assert plan_readiness(started=True, draining=False, index=[], serving={"a": True, "b": True}).ready
    waiting = plan_readiness(started=True, draining=False, index=[], serving={"a": True, "b": False})
    assert not waiting.ready
    assert waiting.waiting_for == ("b",)


def test_waits_for_repository_models_that_are_loading_and_not_yet_in_the_runtime() -> None:
    index = [IndexEntry("ctr", "1", "LOADING")]
    readiness = plan_readiness(started=True, draining=False, index=index, serving={})
    assert readiness.waiting_for == ("ctr",)


def test_stays_ready_while_a_new_version_loads_beside_the_serving_one() -> None:
    index = [IndexEntry("ctr", "1", "READY"), IndexEntry("ctr", "2", "LOADING")]
    assert plan_readiness(started=True, draining=False, index=index, serving={"ctr": True}).ready


def test_unloaded_and_failed_models_are_not_waited_for() -> None:
    index = [IndexEntry("old", "1", "UNAVAILABLE"), IndexEntry("bad", "1", "FAILED", "checksum")]
    serving = {"old": False, "bad": False, "ctr": True}
    assert plan_readiness(started=True, draining=False, index=index, serving=serving).ready
