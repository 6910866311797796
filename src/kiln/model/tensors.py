"""A graph's signature: its inputs and outputs as ``TensorSpec``, with ONNX element types mapped
to kiln datatype names. Values kiln cannot describe come back as ``Problem``s, not exceptions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx

from kiln.errors import Problem
from kiln.types import DataType, TensorSpec

_P = onnx.TensorProto
DATATYPE_OF_ELEM_TYPE: dict[int, DataType] = {
    _P.BOOL: "BOOL",
    _P.UINT8: "UINT8",
    _P.UINT16: "UINT16",
    _P.UINT32: "UINT32",
    _P.UINT64: "UINT64",
    _P.INT8: "INT8",
    _P.INT16: "INT16",
    _P.INT32: "INT32",
    _P.INT64: "INT64",
    _P.FLOAT16: "FP16",
    _P.FLOAT: "FP32",
    _P.DOUBLE: "FP64",
    _P.BFLOAT16: "BF16",
    _P.STRING: "BYTES",
}
"""ONNX ``TensorProto`` element types kiln can carry, and their kiln (KServe v2) names."""

_SUPPORTED_NAMES = ", ".join(onnx.TensorProto.DataType.Name(t) for t in DATATYPE_OF_ELEM_TYPE)


def elem_type_name(elem_type: int) -> str:
    """``FLOAT``, ``COMPLEX64``...; the number itself when ONNX does not know it."""
    try:
        return str(onnx.TensorProto.DataType.Name(elem_type))
    except ValueError:
        return str(elem_type)


@dataclass(frozen=True, slots=True)
class Signature:
    """The model's inputs and outputs, and what kept any of them from being described."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    problems: tuple[Problem, ...]


def graph_inputs(graph: Any) -> list[Any]:
    """Graph inputs a caller must feed: initializers listed as inputs (older IR) are not inputs."""
    constant = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    return [vi for vi in graph.input if vi.name not in constant]


def signature(graph: Any) -> Signature:
    """Describe the graph's inputs and outputs; unknown or symbolic dims become ``-1``."""
    problems: list[Problem] = []
    inputs = _specs(graph_inputs(graph), "input", problems)
    outputs = _specs(list(graph.output), "output", problems)
    return Signature(inputs, outputs, tuple(problems))


def _specs(values: list[Any], kind: str, problems: list[Problem]) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        spec = tensor_spec(value, kind)
        if isinstance(spec, Problem):
            problems.append(spec)
        else:
            specs.append(spec)
    return tuple(specs)


def tensor_spec(value: Any, kind: str) -> TensorSpec | Problem:
    """The ``TensorSpec`` of one graph input or output (a ``ValueInfoProto``), or why there is none."""
    where = f"{kind} {value.name!r}"
    which = value.type.WhichOneof("value")
    if which != "tensor_type":
        return Problem(
            where,
            f"is a {which or 'value without a type'}, not a tensor",
            f"kiln serves dense tensors only; change the model's {kind} to a tensor",
        )
    tensor_type = value.type.tensor_type
    datatype = DATATYPE_OF_ELEM_TYPE.get(tensor_type.elem_type)
    if datatype is None:
        return Problem(
            where,
            f"has element type {elem_type_name(tensor_type.elem_type)}, which kiln cannot carry",
            f"cast it in the model to one of {_SUPPORTED_NAMES}",
        )
    if not tensor_type.HasField("shape"):
        return Problem(
            where,
            "declares no shape (its rank is unknown)",
            "export the model with a shape for it (dynamic axes are fine, e.g. ['batch', 13])",
        )
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    return TensorSpec(value.name, datatype, shape)
