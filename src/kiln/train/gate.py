"""Running a candidate ONNX model on the holdout slice with ONNX Runtime: its AUC, and whether
every output is finite (a version that outputs NaN is never published)."""

from __future__ import annotations

from collections.abc import Sequence
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
        shapes = {i.name: [1 if not isinstance(d, int) else d for d in i.shape] for i in session.get_inputs()}
        feeds = {
            i.name: np.zeros(shapes[i.name], np.int64 if "int64" in i.type else np.float32)
            for i in session.get_inputs()
        }
        return float("nan"), bool(np.isfinite(session.run(None, feeds)[0]).all())
    scores = session.run(None, {"dense": inputs.dense, "sparse": inputs.sparse})[0].reshape(-1)
    finite = bool(np.isfinite(scores).all())
    return (roc_auc(inputs.labels, scores) if finite else float("nan")), finite
