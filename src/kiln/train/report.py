"""What the trainer writes beside each version (``training.json``) and remembers of each export."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from kiln.train.policy import GateDecision

TRAINING_FILE = "training.json"


@dataclass(frozen=True, slots=True)
class TrainingRecord:
    """How a version was trained. Times ending in ``_s`` are Unix seconds; ``*_seconds`` durations.

    Fields:
        offset: the last feedback offset it learned from.
        num_samples: samples learned since the trainer's first start.
        first_new_received_s / last_received_s: when the store received the oldest / newest event
            this version learned and the previously published one had not (freshness is measured
            from these; an export the trainer's gate rejected publishes nothing, so its events
            count as new for the next published version).
        train_seconds / export_seconds / gate_seconds: the trainer's step durations.
        candidate_auc / live_auc: holdout AUC of this version and of the previous published one.
        published_at_s: when the trainer published it.
    """

    offset: int
    num_samples: int
    first_new_received_s: float
    last_received_s: float
    train_seconds: float
    export_seconds: float
    gate_seconds: float
    candidate_auc: float
    live_auc: float
    published_at_s: float

    def to_json(self) -> bytes:
        values = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}
        return orjson.dumps(values)

    @classmethod
    def from_json(cls, raw: bytes) -> TrainingRecord:
        data: dict[str, Any] = orjson.loads(raw)
        values: dict[str, Any] = {k: (float("nan") if v is None else v) for k, v in data.items()}
        return cls(**{k: v for k, v in values.items() if k in cls.__slots__})

    @classmethod
    def read(cls, version_dir: Path) -> TrainingRecord | None:
        path = version_dir / TRAINING_FILE
        try:
            return cls.from_json(path.read_bytes())
        except (OSError, orjson.JSONDecodeError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One export: the version published (``""`` when the gate rejected it), the gate, the record."""

    version: str
    gate: GateDecision
    training: TrainingRecord
