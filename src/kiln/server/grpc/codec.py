"""KServe v2 inference over gRPC: ``ModelInferRequest`` in, ``ModelInferResponse`` out.

Inputs come either as ``raw_input_contents`` (one little-endian byte string per input, in input
order: what tritonclient and perf_analyzer send) or as typed ``contents``; never both. kiln always
answers with ``raw_output_contents``, which every Triton client reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from kiln.errors import InvalidInput, describe
from kiln.server.core import InferRequest, InferResponse
from kiln.server.grpc._generated import kserve_pb2 as pb
from kiln.server.tensors import check_shape, datatype_name, from_list, from_raw, to_raw
from kiln.types import Array

Message = Any
"""A generated protobuf message (the generated modules are untyped)."""

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(parameter: Message) -> object:
    """The value of an ``InferParameter`` (whichever of its fields is set), or ``None``."""
    kind = parameter.WhichOneof("parameter_choice")
    return None if kind is None else getattr(parameter, kind)


def _parameters(parameters: Mapping[str, Message]) -> dict[str, object]:
    return {key: parameter_value(value) for key, value in parameters.items()}


def decode_request(message: Message, *, tenant: str, remaining_s: float | None) -> InferRequest:
    """Decode one ``ModelInferRequest``. ``InvalidInput`` naming the tensor, value and fix."""
    if not message.model_name:
        raise InvalidInput(describe("the request names no model", fix="set model_name"))
    raws = message.raw_input_contents
    entries = message.inputs
    if not entries:
        raise InvalidInput(describe("the request has no inputs", fix="send at least one input tensor"))
    if raws and len(raws) != len(entries):
        raise InvalidInput(
            describe(
                "raw_input_contents does not match the inputs",
                seen=f"{len(raws)} raw buffers for {len(entries)} inputs",
                fix="send one raw buffer per input, in input order",
            )
        )
    inputs: dict[str, Array] = {}
    for index, entry in enumerate(entries):
        name = entry.name
        if name in inputs:
            raise InvalidInput(describe(f"input {name!r} is given twice"))
        shape = check_shape(name, list(entry.shape))
        if raws:
            if entry.HasField("contents"):
                raise InvalidInput(
                    describe(f"input {name!r} has both contents and raw_input_contents", fix="use one")
                )
            inputs[name] = from_raw(name, entry.datatype, shape, raws[index])
        else:
            inputs[name] = _from_contents(name, entry.datatype, shape, entry.contents)
    parameters = _parameters(message.parameters)
    return InferRequest(
        model=message.model_name,
        inputs=inputs,
        version=message.model_version or None,
        id=message.id,
        outputs=tuple(o.name for o in message.outputs) or None,
        priority=parameters.get("priority"),
        timeout_us=parameters.get("timeout"),
        remaining_s=remaining_s,
        tenant=tenant,
    )


def _from_contents(name: str, datatype: str, shape: tuple[int, ...], contents: Message) -> Array:
    field = _CONTENTS.get(datatype)
    if field is None:
        if datatype in ("FP16", "BF16"):
            raise InvalidInput(
                describe(
                    f"input {name!r} is {datatype}, which has no typed contents",
                    fix="send it as raw_input_contents",
                )
            )
        from_list(name, datatype, shape, [])  # raises the unknown-datatype error
        raise InvalidInput(describe(f"input {name!r} has no typed contents field", seen=datatype))
    return from_list(name, datatype, shape, list(getattr(contents, field)))


def encode_response(response: InferResponse) -> Message:
    reply = pb.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id)
    for name, array in response.outputs:
        reply.outputs.add(name=name, datatype=datatype_name(array), shape=array.shape)
        reply.raw_output_contents.append(to_raw(array))
    return reply


def from_json(data: Mapping[str, object], message: Message) -> Message:
    """Fill ``message`` from protocol JSON (the dicts :mod:`kiln.server.model_info` builds)."""
    return json_format.ParseDict(data, message, ignore_unknown_fields=True)
