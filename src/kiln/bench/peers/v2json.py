"""The KServe v2 wire format as the peer servers speak it: pure encode/decode, no I/O.

A hand-written deployment typically speaks JSON: ``{"inputs": [{"name", "shape", "datatype",
"data"}]}`` in, ``{"model_name", "outputs": [...]}`` out, ``data`` a flat (row-major) list.
The peers also read inputs sent in Triton's binary-tensor extension (a JSON header of
``Inference-Header-Content-Length`` bytes, then each input's raw bytes, its size in
``parameters.binary_data_size``), so that the same client (``kiln bench``, perf_analyzer) drives
every server the same way; they answer in JSON.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kiln.errors import InvalidInput, describe
from kiln.types import Array, TensorSpec, datatype_of, numpy_dtype

HEADER_LENGTH = "Inference-Header-Content-Length"


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
        raw = entry.get("raw")
        if raw is None and "raw_b64" in entry:
            raw = base64.b64decode(entry["raw_b64"])
        try:
            dtype = numpy_dtype(spec.datatype)
            data = (
                np.frombuffer(raw, dtype=dtype)
                if raw is not None
                else np.asarray(entry.get("data"), dtype=dtype)
            )
            array = data.reshape(shape)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(describe(f"input {name!r} does not fit its shape", seen=str(exc))) from None
        arrays[name] = array
    missing = sorted(set(known) - set(arrays))
    if missing:
        raise InvalidInput(describe("inputs are missing", seen=missing, fix="send every model input"))
    return arrays


def split_binary(body: bytes, header_length: int | None) -> dict[str, Any]:
    """The request as JSON, with each binary input's bytes under ``raw`` (``header_length``
    ``None``: the body is plain JSON)."""
    if header_length is None:
        parsed: dict[str, Any] = json.loads(body)
        return parsed
    if not 0 < header_length <= len(body):
        raise InvalidInput(describe("bad Inference-Header-Content-Length", seen=header_length))
    request: dict[str, Any] = json.loads(body[:header_length])
    offset = header_length
    for entry in request.get("inputs", []):
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            entry["raw"] = body[offset : offset + int(size)]
            offset += int(size)
    return request


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


def model_config(model: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """``GET /v2/models/<model>/config`` in Triton's form (what perf_analyzer reads): the batch axis
    is folded into ``max_batch_size`` when every tensor's first dimension is dynamic."""
    batched = all(s.shape and s.shape[0] == -1 for s in (*inputs, *outputs))

    def tensors(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "data_type": f"TYPE_{s.datatype}",
                 "dims": list(s.shape[1:] if batched else s.shape)} for s in specs]  # fmt: skip

    return {"name": model, "platform": "onnxruntime_onnx", "max_batch_size": 1 << 16 if batched else 0,
            "input": tensors(inputs), "output": tensors(outputs)}  # fmt: skip


def server_metadata(name: str) -> dict[str, Any]:
    """``GET /v2``: the server's name, version and protocol extensions (none)."""
    return {"name": name, "version": "1", "extensions": []}


def error_body(message: str) -> dict[str, str]:
    return {"error": message}
