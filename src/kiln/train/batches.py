"""Feedback events → training arrays (pure): the ``ctr`` inputs and labels of the usable events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kiln.feedback import StoredEvent
from kiln.types import Array


@dataclass(frozen=True)
class Examples:
    """Rows ready for the ``ctr`` module, the offsets they came from, and how many events were
    skipped (no label, no features after the join, wrong lengths or ids out of range)."""

    dense: Array
    sparse: Array
    labels: Array
    offsets: Array
    received_s: Array
    num_skipped: int

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, mask: Array) -> Examples:
        return Examples(
            self.dense[mask],
            self.sparse[mask],
            self.labels[mask],
            self.offsets[mask],
            self.received_s[mask],
            0,
        )


def to_examples(events: Sequence[StoredEvent], *, num_dense: int, num_tables: int, num_rows: int) -> Examples:
    dense: list[Sequence[float]] = []
    sparse: list[Sequence[float]] = []
    kept: list[StoredEvent] = []
    for stored in events:
        event = stored.event
        d, s = event.features.get("dense"), event.features.get("sparse")
        if event.label is None or d is None or s is None or len(d) != num_dense or len(s) != num_tables:
            continue
        if min(s) < 0 or max(s) >= num_rows:
            continue
        dense.append(d)
        sparse.append(s)
        kept.append(stored)
    return Examples(
        dense=np.asarray(dense, dtype=np.float32).reshape(-1, num_dense),
        sparse=np.asarray(sparse, dtype=np.int64).reshape(-1, num_tables),
        labels=np.asarray([e.event.label for e in kept], dtype=np.float32),
        offsets=np.asarray([e.offset for e in kept], dtype=np.int64),
        received_s=np.asarray([e.received_s for e in kept], dtype=np.float64),
        num_skipped=len(events) - len(kept),
    )
