"""Scoring a model file on a holdout slice of labelled feedback with ONNX Runtime: its AUC, and
whether every output is finite. Feedback features name the model's inputs (input name → the flat
values of one row); rows missing an input or of the wrong length are left out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kiln.feedback import StoredEvent
from kiln.model.load import runtime_input
from kiln.train.gate import input_dtype, score_session
from kiln.types import Array


@dataclass(frozen=True, slots=True)
class Score:
    """A model on a holdout slice: AUC (NaN when there is nothing to compare: no rows, one class,
    or outputs that are not one score per row) and whether every output was finite."""

    auc: float
    finite: bool
    num_rows: int


class HoldoutScorer:
    """Scores model files (one ONNX Runtime session per file, kept while the file is the same)."""

    def __init__(self, *, intra_op_threads: int = 1) -> None:
        self.intra_op_threads = intra_op_threads
        self._sessions: dict[Path, tuple[int, ort.InferenceSession]] = {}

    def score(self, model_file: Path, events: Sequence[StoredEvent]) -> Score:
        session = self._session(model_file)
        feeds, labels = _feeds(session, events)
        auc, finite = score_session(session, feeds, labels)
        return Score(auc, finite, 0 if labels is None else len(labels))

    def forget(self, keep: set[Path]) -> None:
        """Close the sessions of files not in ``keep``."""
        for path in list(self._sessions):
            if path not in keep:
                del self._sessions[path]

    def _session(self, model_file: Path) -> ort.InferenceSession:
        stamp = model_file.stat().st_mtime_ns
        cached = self._sessions.get(model_file)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        session = ort.InferenceSession(runtime_input(model_file), options, providers=["CPUExecutionProvider"])
        self._sessions[model_file] = (stamp, session)
        return session


def _feeds(
    session: ort.InferenceSession, events: Sequence[StoredEvent]
) -> tuple[dict[str, Array], Array | None]:
    inputs = session.get_inputs()
    widths = {i.name: math.prod(d for d in i.shape[1:] if isinstance(d, int)) for i in inputs}
    kept = [
        e
        for e in events
        if e.event.label is not None
        and all(len(e.event.features.get(name, ())) == width for name, width in widths.items())
    ]
    if not kept:
        return {}, None
    feeds = {
        i.name: np.asarray([e.event.features[i.name] for e in kept], dtype=input_dtype(i.type)).reshape(
            [len(kept), *(d if isinstance(d, int) else 1 for d in i.shape[1:])]
        )
        for i in inputs
    }
    labels = np.asarray([e.event.label for e in kept], dtype=np.float64)
    return feeds, labels
