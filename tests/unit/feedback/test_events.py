from __future__ import annotations

import pytest

from kiln.errors import InvalidInput
from kiln.feedback import parse_events


def test_parses_features_label_and_default_timestamp() -> None:
    body = {"events": [{"label": 1, "features": {"dense": [0.5, 1.0], "sparse": [3, 4]}}]}
    (event,) = parse_events("ctr", body, now_s=123.0)
    assert event.model == "ctr"
    assert event.label == 1.0
    assert event.timestamp_s == 123.0
    assert event.features == {"dense": [0.5, 1.0], "sparse": [3, 4]}


def test_request_id_only_and_impression_without_label() -> None:
    body = {"events": [{"request_id": "r1", "label": 0}, {"request_id": "r2", "features": {"x": [1]}}]}
    labelled, impression = parse_events("m", body, now_s=1.0)
    assert labelled.request_id == "r1"
    assert labelled.features == {}
    assert impression.label is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": [{"label": 2, "request_id": "a"}]}, "events[0].label"),
        ({"events": [{"label": True, "request_id": "a"}]}, "events[0].label"),
        ({"events": [{"label": 1, "request_id": "a"}, {"label": 1}]}, "events[1] needs request_id"),
        ({"events": [{"label": 1, "features": {"dense": [1, "x"]}}]}, "events[0].features.dense[1]"),
        ({"events": [{"label": 1, "features": {"dense": []}}]}, "events[0].features.dense"),
        ({"events": [{"label": 1, "request_id": 7}]}, "events[0].request_id"),
        ({"events": [{"label": 1, "request_id": "a", "timestamp": -1}]}, "events[0].timestamp"),
        ({"events": [{"label": 1, "request_id": "a", "colour": 1}]}, "unknown field"),
        ({"events": []}, "events must be a non-empty list"),
        ({"event": []}, "unknown field"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_input_names_the_field(body: object, field: str) -> None:
    with pytest.raises(InvalidInput, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_events("m", body, now_s=0.0)
