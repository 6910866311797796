from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import ConfigError
from kiln.feedback import FeedbackEvent, FeedbackStore


def _event(
    label: float | None, request_id: str = "", model: str = "ctr", **features: list[float]
) -> FeedbackEvent:
    return FeedbackEvent(model=model, label=label, timestamp_s=5.0, request_id=request_id, features=features)


def test_append_gives_increasing_offsets_and_reads_in_order(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path / "fb.db", wall_clock=lambda: 42.0) as store:
        first = store.append([_event(1, x=[1.0]), _event(0, x=[2.0])])
        second = store.append([_event(1, x=[3.0])])
        assert (first.first, first.last, first.count) == (1, 2, 2)
        assert second.first == 3
        events = store.read("ctr", after=1)
        assert [e.offset for e in events] == [2, 3]
        assert [e.event.features["x"] for e in events] == [[2.0], [3.0]]
        assert events[0].received_s == 42.0
        assert store.read("ctr", after=0, limit=1)[0].offset == 1
        assert store.last_offset("ctr") == 3
        assert store.count() == 3


def test_models_are_separate_streams(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path / "fb.db") as store:
        store.append([_event(1, model="a", x=[1]), _event(1, model="b", x=[2]), _event(0, model="a", x=[3])])
        assert [e.offset for e in store.read("a", after=0)] == [1, 3]
        assert store.count("b") == 1


def test_label_joins_the_features_of_an_earlier_impression(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path / "fb.db") as store:
        store.append([_event(None, "r1", x=[7.0]), _event(None, "r2", x=[8.0])])
        store.append([_event(1, "r2"), _event(0, "unknown")])
        labelled = store.read("ctr", after=0, labelled_only=True)
        assert [(e.event.label, e.event.features) for e in labelled] == [(1.0, {"x": [8.0]}), (0.0, {})]


def test_consumer_offsets_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    with FeedbackStore(path) as store:
        assert store.committed("trainer") == 0
        store.append([_event(1, x=[1.0])] * 5)
        store.commit("trainer", 3)
    with FeedbackStore(path) as store:
        assert store.committed("trainer") == 3
        assert [e.offset for e in store.read("ctr", after=store.committed("trainer"))] == [4, 5]


def test_two_connections_see_each_others_writes(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path / "fb.db") as writer, FeedbackStore(tmp_path / "fb.db") as reader:
        writer.append([_event(1, x=[1.0])])
        assert reader.last_offset() == 1


def test_unwritable_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot open the feedback store"):
        FeedbackStore(blocker / "fb.db")


def test_the_holdout_is_the_newest_labelled_events_at_multiples_of_every(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path / "fb.db") as store:
        store.append([_event(float(i % 2), x=[float(i)]) for i in range(1, 41)])
        store.append([_event(None, "r", x=[7.0]), _event(1, "other", model="m", x=[1.0])])  # 41, 42
        store.append([_event(None, "q", x=[9.0])] * 7 + [_event(1, "q")])  # 43..50: a joined label at 50
        holdout = store.read_holdout("ctr", every=10, limit=3)
    assert [e.offset for e in holdout] == [30, 40, 50]
    assert holdout[-1].event.features == {"x": [9.0]}
