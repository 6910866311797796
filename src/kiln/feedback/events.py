"""Feedback events: what a client says happened after a prediction (a click, a fraud label).

An event names the model, carries a ``label`` (0..1; ``None`` for an impression that only records
the features) and the request's ``features`` or its ``request_id`` (or both: an impression logged
with its features and a later label that names the same request id are joined when read).
:func:`parse_events` turns a JSON body into events and says which field of which event is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln.errors import InvalidInput, describe

MAX_EVENTS_PER_BATCH = 10_000
MAX_REQUEST_ID_CHARS = 256
MAX_FEATURE_VALUES = 65_536

Features = Mapping[str, Sequence[float]]
"""Input name → flat values of one request (one row: ``dense`` 13 floats, ``sparse`` 26 ids)."""


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One piece of feedback, as a client sends it.

    Fields:
        model: the model the prediction came from.
        label: the observed outcome in [0, 1] (click = 1); ``None`` for an impression record.
        timestamp_s: when it happened (Unix seconds, the client's clock).
        request_id: the inference request's id, to join a label with an earlier impression.
        features: the request's inputs (input name → flat values), when sent with the label.
    """

    model: str
    label: float | None
    timestamp_s: float
    request_id: str = ""
    features: Features = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event read back from the store: its offset (a position in the stream, increasing) and
    when the store accepted it (Unix seconds, the server's clock)."""

    offset: int
    received_s: float
    event: FeedbackEvent


def parse_events(model: str, body: object, *, now_s: float) -> list[FeedbackEvent]:
    """The events of a request body ``{"events": [{...}, ...]}`` for ``model``.

    Each event: ``label`` (number in [0, 1] or null), ``timestamp`` (Unix seconds; default
    ``now_s``), ``request_id`` (string) and/or ``features`` (object of input name → list of numbers).
    Raises ``InvalidInput`` naming the field (``events[3].label``), the value seen and the fix.
    """
    if not isinstance(body, Mapping):
        raise InvalidInput(describe("the feedback body must be a JSON object", seen=type(body).__name__))
    unknown = sorted(set(body) - {"events"})
    if unknown:
        raise InvalidInput(
            describe("unknown field in the feedback body", seen=unknown, fix="send {'events': [...]}")
        )
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise InvalidInput(
            describe(
                "events must be a non-empty list", seen=type(events).__name__, fix="send {'events': [...]}"
            )
        )
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise InvalidInput(
            describe(
                "too many events in one batch", seen=len(events), fix=f"send at most {MAX_EVENTS_PER_BATCH}"
            )
        )
    return [parse_event(model, item, f"events[{i}]", now_s=now_s) for i, item in enumerate(events)]


def parse_event(model: str, item: object, where: str, *, now_s: float) -> FeedbackEvent:
    """One event object (see :func:`parse_events`); ``where`` prefixes field names in errors."""
    if not isinstance(item, Mapping):
        raise InvalidInput(describe(f"{where} must be an object", seen=type(item).__name__))
    unknown = sorted(set(item) - {"label", "timestamp", "request_id", "features"})
    if unknown:
        raise InvalidInput(
            describe(
                f"{where}: unknown field", seen=unknown, fix="use label, timestamp, request_id, features"
            )
        )
    request_id = _request_id(item.get("request_id", ""), f"{where}.request_id")
    features = _features(item.get("features", {}), f"{where}.features")
    if not request_id and not features:
        raise InvalidInput(describe(f"{where} needs request_id or features", fix="send at least one of them"))
    return FeedbackEvent(
        model=model,
        label=_label(item.get("label"), f"{where}.label"),
        timestamp_s=_timestamp(item.get("timestamp", now_s), f"{where}.timestamp"),
        request_id=request_id,
        features=features,
    )


def _label(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidInput(describe(f"{where} must be a number in [0, 1] or null", seen=value))
    return float(value)


def _timestamp(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput(describe(f"{where} must be Unix seconds (a number >= 0)", seen=value))
    return float(value)


def _request_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_REQUEST_ID_CHARS:
        shown = value if not isinstance(value, str) else f"{len(value)} characters"
        raise InvalidInput(
            describe(f"{where} must be a string of <= {MAX_REQUEST_ID_CHARS} characters", seen=shown)
        )
    return value


def _features(value: Any, where: str) -> dict[str, list[float]]:
    if not isinstance(value, Mapping):
        raise InvalidInput(
            describe(f"{where} must be an object of input name -> numbers", seen=type(value).__name__)
        )
    features: dict[str, list[float]] = {}
    for name, values in value.items():
        if not isinstance(values, list) or not 0 < len(values) <= MAX_FEATURE_VALUES:
            raise InvalidInput(
                describe(f"{where}.{name} must be a non-empty list of numbers", seen=type(values).__name__)
            )
        for index, number in enumerate(values):
            if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
                raise InvalidInput(describe(f"{where}.{name}[{index}] must be a finite number", seen=number))
        features[str(name)] = values
    return features
