"""The KServe v2 JSON wire format as the peer servers speak it: pure encode/decode, no I/O.

A hand-written deployment typically speaks JSON: ``{"inputs": [{"name", "shape", "datatype",
"data"}]}`` in, ``{"model_name", "outputs": [...]}`` out, ``data`` a flat (row-major) list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kiln.errors import InvalidInput, describe
from kiln.types import Array, TensorSpec, datatype_of, numpy_dtype


def decode_inputs(body: Mapping[str, Any], specs: Sequence[TensorSpec]) -> dict[str, Array]:
    """The input arrays of a v2 JSON infer request; ``InvalidInput`` naming the first problem."""
    entries = body.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput(describe("the request has no 'inputs' list", fix="send the KServe v2 JSON body"))
    known = {s.name: s for s in specs}
    arrays: dict[str, Array] = {}
    for entry in entries:
        name = str(entry.get("name"))
        spec = known.get(name)
        if spec is None:
            raise InvalidInput(describe("unknown input", seen=name, fix=f"the inputs are {sorted(known)}"))
        shape = [int(d) for d in entry.get("shape", [])]
        try:
            array = np.asarray(entry.get("data"), dtype=numpy_dtype(spec.datatype)).reshape(shape)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(describe(f"input {name!r} does not fit its shape", seen=str(exc))) from None
        arrays[name] = array
    missing = sorted(set(known) - set(arrays))
    if missing:
        raise InvalidInput(describe("inputs are missing", seen=missing, fix="send every model input"))
    return arrays


def encode_outputs(model: str, outputs: Mapping[str, Array]) -> dict[str, Any]:
    """A v2 JSON infer response holding ``outputs``."""
    return {
        "model_name": model,
        "outputs": [
            {
                "name": name,
                "shape": list(value.shape),
                "datatype": datatype_of(value.dtype),
                "data": np.asarray(value).ravel().tolist(),
            }
            for name, value in outputs.items()
        ],
    }


def model_metadata(model: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """``GET /v2/models/<model>``: name, platform and tensors (``-1`` for a dynamic dimension)."""

    def tensors(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    return {"name": model, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": tensors(inputs), "outputs": tensors(outputs)}  # fmt: skip


def error_body(message: str) -> dict[str, str]:
    return {"error": message}
