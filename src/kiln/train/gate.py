"""Running a candidate ONNX model on the holdout slice with ONNX Runtime: its AUC, and whether
every output is finite (a version that outputs NaN is never published)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from kiln.train.auc import roc_auc
from kiln.types import Array


@dataclass(frozen=True)
class GateInputs:
    dense: Array
    sparse: Array
    labels: Array

    @classmethod
    def of(cls, rows: Sequence[tuple[Array, Array, float]]) -> GateInputs:
        if not rows:
            return cls(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64), np.zeros(0, np.float32))
        return cls(
            np.stack([r[0] for r in rows]).astype(np.float32),
            np.stack([r[1] for r in rows]).astype(np.int64),
            np.asarray([r[2] for r in rows], dtype=np.float32),
        )

    def __len__(self) -> int:
        return len(self.labels)


def evaluate(model: bytes, inputs: GateInputs) -> tuple[float, bool]:
    """(holdout AUC, all outputs finite) of the ONNX ``model``; AUC is NaN on an empty holdout.
    With no holdout rows the model still runs on one zero row, so a NaN graph is caught."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    if len(inputs) == 0:
        return score_session(session, {}, None)
    return score_session(session, {"dense": inputs.dense, "sparse": inputs.sparse}, inputs.labels)


def score_session(
    session: ort.InferenceSession, feeds: Mapping[str, Array], labels: Array | None
) -> tuple[float, bool]:
    """(AUC, all outputs finite) of ``session`` on ``feeds`` against ``labels``. ``labels`` None:
    no rows; the session runs on one zero row (a graph that outputs NaN is caught) and the AUC is
    NaN. The AUC is NaN too when the outputs are not finite or not one score per row."""
    if labels is None:
        outputs = session.run(None, zero_row(session))
        return float("nan"), all(bool(np.isfinite(o).all()) for o in outputs)
    scores = np.asarray(session.run(None, dict(feeds))[0], dtype=np.float64)
    finite = bool(np.isfinite(scores).all())
    if not finite or scores.size != len(labels):
        return float("nan"), finite
    return roc_auc(labels, scores.reshape(-1)), True


def input_dtype(onnx_type: str) -> type[np.generic]:
    """The numpy dtype of an ONNX Runtime input type name (``tensor(int64)``...)."""
    if "int64" in onnx_type:
        return np.int64
    if "int32" in onnx_type:
        return np.int32
    if "double" in onnx_type:
        return np.float64
    return np.float32


def zero_row(session: ort.InferenceSession) -> dict[str, Array]:
    """One all-zero row for every input of ``session`` (dynamic non-batch dims taken as 1)."""
    return {
        i.name: np.zeros([1, *(d if isinstance(d, int) else 1 for d in i.shape[1:])], input_dtype(i.type))
        for i in session.get_inputs()
    }
