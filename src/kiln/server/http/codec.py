"""KServe v2 inference over HTTP: JSON tensors and Triton's binary tensor extension.

A request body is a JSON header, optionally followed by raw tensor bytes. The header's length
comes in ``Inference-Header-Content-Length`` (absent, or equal to the body's length: plain JSON).
Inputs carrying ``parameters.binary_data_size`` take their bytes from after the header, in input
order; the others carry ``data`` (nested or flat, row-major). Outputs are sent as raw bytes when
asked (``parameters.binary_data`` per output, or ``binary_data_output`` for the request), else as
JSON ``data``.

JSON is parsed with orjson. Strict JSON has no NaN or Infinity; a body holding them (perf_analyzer's
random data does) is parsed again by the standard library and refused with a message naming the
input that holds them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import orjson

from kiln.errors import InvalidInput, describe
from kiln.server.core import InferRequest, InferResponse, Unsupported
from kiln.server.tensors import check_shape, datatype_name, from_list, from_raw, to_list, to_raw
from kiln.types import Array

_NUMPY_JSON = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """How the outputs of one request go back: binary by default or not, and per-output choices."""

    binary_default: bool = False
    binary: Mapping[str, bool] = field(default_factory=dict)

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


_ALL_JSON = OutputPlan(False)
_ALL_BINARY = OutputPlan(True)


class _NonFinite:
    """Remembers that the standard-library parser met NaN or Infinity."""

    seen = False

    def __call__(self, constant: str) -> float:
        self.seen = True
        return float(constant)


def _parse_json(text: bytes | memoryview) -> tuple[object, bool]:
    """The parsed header and whether it held NaN/Infinity. ``InvalidInput`` when not JSON."""
    try:
        return orjson.loads(text), False
    except orjson.JSONDecodeError as strict:
        constants = _NonFinite()
        try:
            return json.loads(bytes(text), parse_constant=constants), constants.seen
        except (ValueError, UnicodeDecodeError):
            raise InvalidInput(
                describe(
                    "the request body is not valid JSON",
                    seen=str(strict),
                    fix="send a KServe v2 JSON request",
                )
            ) from None


def header_span(body: bytes, header_length: int | None) -> int:
    """The JSON header's length in ``body``; ``Unsupported`` for 0, ``InvalidInput`` when it does not fit."""
    if header_length is None:
        return len(body)
    if header_length == 0:
        raise Unsupported(
            describe(
                "Inference-Header-Content-Length 0 (a raw body without JSON header) is not supported",
                fix="send a JSON header with binary_data_size on the input",
            )
        )
    if not 0 < header_length <= len(body):
        raise InvalidInput(
            describe(
                "Inference-Header-Content-Length does not fit the body",
                seen=f"{header_length} for a body of {len(body)} bytes",
                fix="give the byte length of the JSON header",
            )
        )
    return header_length


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(describe(f"{what} must be a JSON object", seen=type(value).__name__))
    return value


def decode_request(
    body: bytes, header_length: int | None, *, model: str, version: str | None, tenant: str
) -> tuple[InferRequest, OutputPlan]:
    """Decode one inference request body. ``InvalidInput`` naming the field, value and fix."""
    json_length = header_span(body, header_length)
    header, nonfinite = _parse_json(body if json_length == len(body) else memoryview(body)[:json_length])
    doc = _mapping(header, "the request")
    inputs = _decode_inputs(doc.get("inputs"), body, json_length, nonfinite)
    parameters = _mapping(doc.get("parameters"), "'parameters'")
    names, plan = _decode_outputs(doc.get("outputs"), parameters)
    request_id = doc.get("id", "")
    request = InferRequest(
        model=model,
        inputs=inputs,
        version=version,
        id=request_id if isinstance(request_id, str) else str(request_id),
        outputs=names,
        priority=parameters.get("priority"),
        timeout_us=parameters.get("timeout"),
        tenant=tenant,
    )
    return request, plan


def _decode_inputs(entries: object, body: bytes, json_length: int, nonfinite: bool) -> dict[str, Array]:
    if not isinstance(entries, list) or not entries:
        raise InvalidInput(describe("the request has no 'inputs' list", fix="send at least one input tensor"))
    inputs: dict[str, Array] = {}
    cursor = json_length
    for entry in entries:
        spec = _mapping(entry, "each input")
        name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
            raise InvalidInput(
                describe(
                    "an input lacks 'name', 'datatype' or 'shape'", seen=_brief(spec), fix="give all three"
                )
            )
        if name in inputs:
            raise InvalidInput(describe(f"input {name!r} is given twice"))
        dims = check_shape(name, shape)
        size = _mapping(spec.get("parameters"), f"parameters of input {name!r}").get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or cursor + size > len(body):
                raise InvalidInput(
                    describe(
                        f"input {name!r}: binary_data_size does not fit the body",
                        seen=f"{size} bytes at {cursor - json_length}, {len(body) - json_length} bytes sent",
                        fix="give each binary input's byte size, in input order",
                    )
                )
            inputs[name] = from_raw(name, datatype, dims, body, cursor, size)
            cursor += size
        elif "data" in spec:
            inputs[name] = _from_json(name, datatype, dims, spec["data"], nonfinite)
        else:
            raise InvalidInput(
                describe(f"input {name!r} has no 'data' and no binary_data_size", fix="send its values")
            )
    if cursor != len(body):
        raise InvalidInput(
            describe(
                "binary input sizes do not add up to the binary part of the body",
                seen=f"sizes total {cursor - json_length} bytes, {len(body) - json_length} bytes sent",
                fix="make binary_data_size match each input's bytes",
            )
        )
    return inputs


def _from_json(name: str, datatype: str, dims: tuple[int, ...], data: object, nonfinite: bool) -> Array:
    array = from_list(name, datatype, dims, data)
    if nonfinite and array.dtype.kind == "f" and not bool(np.isfinite(array).all()):
        raise InvalidInput(
            describe(
                f"input {name!r} holds NaN or Infinity in its JSON data",
                fix="send finite numbers (JSON has no NaN), or send the tensor as binary data",
            )
        )
    return array


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _decode_outputs(
    entries: object, parameters: Mapping[str, object]
) -> tuple[tuple[str, ...] | None, OutputPlan]:
    binary_default = parameters.get("binary_data_output") is True
    if entries is None:
        return None, _ALL_BINARY if binary_default else _ALL_JSON
    if not isinstance(entries, list):
        raise InvalidInput(describe("'outputs' must be a list", seen=type(entries).__name__))
    names: list[str] = []
    binary: dict[str, bool] = {}
    for entry in entries:
        spec = _mapping(entry, "each requested output")
        name = spec.get("name")
        if not isinstance(name, str):
            raise InvalidInput(describe("a requested output has no 'name'", seen=_brief(spec)))
        params = _mapping(spec.get("parameters"), f"parameters of output {name!r}")
        if params.get("classification"):
            raise Unsupported(describe("the classification extension is not supported", seen=name))
        if "binary_data" in params:
            binary[name] = params["binary_data"] is True
        names.append(name)
    return tuple(names), OutputPlan(binary_default, binary)


def encode_response(response: InferResponse, plan: OutputPlan) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it."""
    outputs: list[dict[str, object]] = []
    raws: list[bytes] = []
    for name, array in response.outputs:
        entry: dict[str, object] = {
            "name": name,
            "datatype": datatype_name(array),
            "shape": list(array.shape),
        }
        if plan.is_binary(name):
            raw = to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            raws.append(raw)
        elif array.dtype.kind in "OSU":
            entry["data"] = to_list(array)
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        outputs.append(entry)
    doc: dict[str, object] = {
        "model_name": response.model,
        "model_version": response.version,
        "outputs": outputs,
    }
    if response.id:
        doc["id"] = response.id
    header = orjson.dumps(doc, option=_NUMPY_JSON)
    if not raws:
        return header, None
    return header + b"".join(raws), len(header)
