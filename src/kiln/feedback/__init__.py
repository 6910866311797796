"""Feedback: what clients report after a prediction, stored durably and read back by a trainer.

* :mod:`~kiln.feedback.events` — :class:`FeedbackEvent` and :func:`parse_events` (JSON → events);
* :mod:`~kiln.feedback.store` — :class:`FeedbackStore`, the SQLite stream with consumer offsets.

See ``docs/online.md``.
"""

from kiln.feedback.events import FeedbackEvent, StoredEvent, parse_event, parse_events
from kiln.feedback.store import AppendResult, FeedbackStore

__all__ = ["AppendResult", "FeedbackEvent", "FeedbackStore", "StoredEvent", "parse_event", "parse_events"]
