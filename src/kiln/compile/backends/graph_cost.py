"""How much work one sample costs an ONNX graph: multiply-accumulates and activation bytes.

A cheap static estimate, made once at build time and stored in the artifact's manifest, from which
a backend chooses its thread count at load (a model doing ~0.1 M MACs per sample runs faster on one
thread; a CNN doing ~2 G needs every core) and estimates its arena. Only the heavy ops are counted
(Conv, ConvTranspose, Gemm, MatMul); element-wise ops and lookups (Gather) are noise next to them.
Shapes come from ONNX shape inference run with the batch dimension set to 1 on a copy of the
graph without weight values, so the estimate costs milliseconds even for large models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

    from kiln.types import ShapeProfile

_SMALL_INITIALIZER_ELEMENTS = 64
"""Initializers up to this size keep their values (shape operands of Reshape, Slice...)."""


@dataclass(frozen=True, slots=True)
class GraphCost:
    """Per-sample work of a graph. Unknown dimensions count as 1, so both are lower-bound-ish for
    dynamic sequence lengths; ``activation_bytes`` sums every intermediate tensor (an upper bound
    on the arena: ONNX Runtime's planner reuses buffers)."""

    macs_per_sample: int
    activation_bytes_per_sample: int

    def to_json(self) -> dict[str, int]:
        return {
            "macs_per_sample": self.macs_per_sample,
            "activation_bytes_per_sample": self.activation_bytes_per_sample,
        }


def estimate_cost(model: onnx.ModelProto, profiles: Sequence[ShapeProfile] = ()) -> GraphCost | None:
    """Estimate per-sample cost; ``None`` when shape inference fails on this graph."""
    import onnx

    skeleton = _skeleton(model, profiles)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception:
        return None
    shapes = _shapes(inferred.graph)
    macs = sum(_node_macs(node, shapes) for node in inferred.graph.node)
    weights = {t.name for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input}
    activation = sum(
        math.prod(_known(shape)) * itemsize
        for name, (shape, itemsize) in shapes.items()
        if name not in weights and name not in graph_inputs
    )
    return GraphCost(int(macs), int(activation))


def _skeleton(model: onnx.ModelProto, profiles: Sequence[ShapeProfile]) -> onnx.ModelProto:
    """A copy without large weight values (their shapes become typed graph inputs), batch = 1."""
    import onnx

    skeleton = without_initializers(model)
    opt = {p.input: p.opt for p in profiles}
    weights = {t.name for t in model.graph.initializer}
    for value in skeleton.graph.input:
        if value.name not in weights:
            _pin_dims(value, opt.get(value.name))
    for tensor in model.graph.initializer:
        if math.prod(tensor.dims) <= _SMALL_INITIALIZER_ELEMENTS:
            skeleton.graph.initializer.append(tensor)
        elif not any(i.name == tensor.name for i in model.graph.input):
            skeleton.graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    return skeleton


def without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph has no initializers; everything else is copied."""
    import onnx

    copy = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _set_field(copy, field.name, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _set_field(copy.graph, field.name, value)
    return copy


def _set_field(target: object, name: str, value: object) -> None:
    from google.protobuf.message import Message

    if isinstance(value, Message):
        getattr(target, name).CopyFrom(value)
    elif isinstance(value, str | bytes | int | float):
        setattr(target, name, value)
    else:
        getattr(target, name).extend(value)


def _pin_dims(value: onnx.ValueInfoProto, opt: tuple[int, ...] | None) -> None:
    dims = value.type.tensor_type.shape.dim
    for axis, dim in enumerate(dims):
        if axis == 0:
            dim.dim_value = 1
        elif opt is not None and axis < len(opt) and not dim.HasField("dim_value"):
            dim.dim_value = opt[axis]


def _shapes(graph: onnx.GraphProto) -> dict[str, tuple[tuple[int | None, ...], int]]:
    """Name -> (shape with None for unknown dims, element size in bytes) for every typed value."""

    found: dict[str, tuple[tuple[int | None, ...], int]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        found[value.name] = (dims, _itemsize(tensor.elem_type))
    for tensor in graph.initializer:
        found[tensor.name] = (tuple(tensor.dims), _itemsize(tensor.data_type))
    return found


def _itemsize(elem_type: int) -> int:
    import onnx

    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except (KeyError, TypeError, ValueError):
        return 4


def _known(shape: Sequence[int | None]) -> list[int]:
    return [d if d else 1 for d in shape]


def _node_macs(node: onnx.NodeProto, shapes: Mapping[str, tuple[tuple[int | None, ...], int]]) -> int:
    def shape(index: int, outputs: bool = False) -> list[int] | None:
        names = node.output if outputs else node.input
        if index >= len(names) or names[index] not in shapes:
            return None
        return _known(shapes[names[index]][0])

    weight, out, data = shape(1), shape(0, outputs=True), shape(0)
    if node.op_type == "Conv" and weight and out:
        return math.prod(weight) * math.prod(out[2:])
    if node.op_type == "ConvTranspose" and weight and data:
        return math.prod(weight) * math.prod(data[2:])
    if node.op_type == "Gemm" and weight:
        return math.prod(weight)  # one row of A per sample: K x N
    if node.op_type == "MatMul" and out and data:
        return math.prod(out) * data[-1]
    if node.op_type == "MatMul" and weight:
        return math.prod(weight)
    return 0
