"""Running an in-memory example graph on ONNX Runtime's CPU provider (for fitting and labels)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime as ort
from onnx import ModelProto

from kiln.types import Array


class Runner:
    """One CPU session over a model held in memory; runs inputs in chunks, outputs concatenated."""

    def __init__(self, model: ModelProto, *, chunk: int = 256) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self._names = [i.name for i in self._session.get_inputs()]
        self._chunk = chunk

    def run(self, inputs: Mapping[str, Array]) -> list[Array]:
        count = len(inputs[self._names[0]])
        parts: list[list[Array]] = []
        for start in range(0, count, self._chunk):
            feeds = {name: inputs[name][start : start + self._chunk] for name in self._names}
            parts.append(self._session.run(None, feeds))
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
