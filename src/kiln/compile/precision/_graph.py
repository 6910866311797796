"""Small ONNX graph helpers shared by the precision passes."""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import onnx

from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, ConfigError, describe
from kiln.types import TensorSpec, datatype_of

if TYPE_CHECKING:
    from kiln.types import DataType

_NODE_IN_MESSAGE = re.compile(r"node \(([^)]*)\)|node with name '([^']*)'")


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


def input_specs(model: onnx.ModelProto) -> tuple[TensorSpec, ...]:
    """The model's real inputs (graph inputs that are not initializers) as TensorSpecs."""
    initializers = {t.name for t in model.graph.initializer}
    specs: list[TensorSpec] = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in tensor.shape.dim)
        specs.append(TensorSpec(value.name, _datatype(tensor.elem_type), dims))
    return tuple(specs)


def _datatype(elem_type: int) -> DataType:
    if elem_type == onnx.TensorProto.BFLOAT16:
        return "BF16"
    if elem_type == onnx.TensorProto.STRING:
        return "BYTES"
    return datatype_of(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def check_keep_fp32(model: onnx.ModelProto, spec: BuildSpec) -> None:
    """``ConfigError`` for a ``keep_fp32_nodes`` name not in the graph or an unknown op type."""
    names = [n.name for n in model.graph.node]
    known = set(names)
    missing = [n for n in spec.keep_fp32_nodes if n not in known]
    if missing:
        sample = ", ".join([n for n in names if n][:8]) or "(the graph has no named nodes)"
        raise ConfigError(
            describe(
                f"--keep-fp32 names node(s) not in the graph: {', '.join(repr(n) for n in missing)}",
                fix=f"use node names from the model, e.g. {sample}",
            )
        )
    op_types = {n.op_type for n in model.graph.node}
    for option, wanted in (
        ("--keep-fp32-op-type", spec.keep_fp32_op_types),
        ("--float-output-op-type", spec.float_output_op_types),
    ):
        unknown = [t for t in wanted if t not in op_types and not onnx.defs.has(t)]
        if unknown:
            raise ConfigError(
                describe(
                    f"{option} names unknown op type(s): {', '.join(repr(t) for t in unknown)}",
                    fix=f"use ONNX op types; this graph has {', '.join(sorted(op_types))}",
                )
            )


def name_unnamed_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a stable name (``<op_type>_<index>``), so it can be excluded by name."""
    taken = {n.name for n in model.graph.node}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def node_in_error(message: str) -> str | None:
    """The node an ONNX Runtime error message blames, if it names one."""
    match = _NODE_IN_MESSAGE.search(message)
    if match is None:
        return None
    return match.group(1) or match.group(2) or None


def verify_loads(model: onnx.ModelProto, *, what: str, providers: Sequence[str] | None = None) -> str | None:
    """Create an ONNX Runtime session for ``model``.

    Returns ``None`` when it loads, or the error text when the runtime only lacks a kernel for some
    node (``NOT_IMPLEMENTED``), which another runtime may have. Raises ``BuildError`` naming the
    node for a graph the runtime calls invalid (a type error the conversion introduced).
    """
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        ort.InferenceSession(
            model.SerializeToString(), options, providers=list(providers or ["CPUExecutionProvider"])
        )
    except Exception as exc:  # onnxruntime raises its own classes, all straight from Exception
        text = str(exc)
        if type(exc).__name__ == "NotImplemented":
            return text
        node = node_in_error(text)
        fix = (
            f"keep that node in fp32 with --keep-fp32 {node}"
            if node
            else "keep the failing node in fp32 with --keep-fp32 NODE"
        )
        raise BuildError(
            describe(
                f"the {what} model does not load in ONNX Runtime" + (f" (node {node!r})" if node else ""),
                seen=text[-400:],
                fix=fix,
            )
        ) from None
    return None


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (converters
    append the casts they insert at the end; ONNX and TensorRT's parser want producers first).
    Among ready nodes the earliest in the current order goes first; a graph with a cycle is left
    as it is."""
    nodes = list(graph.node)
    for node in nodes:
        for sub in _subgraphs(node):
            sort_topologically(sub)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    consumers: list[list[int]] = [[] for _ in nodes]
    waiting = [0] * len(nodes)
    for i, node in enumerate(nodes):
        for p in {producer[n] for n in _reads(node) if n in producer} - {i}:
            consumers[p].append(i)
            waiting[i] += 1
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for c in consumers[i]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, c)
    if len(order) == len(nodes) and order != sorted(order):
        reordered = [_copy_node(nodes[i]) for i in order]
        del graph.node[:]
        graph.node.extend(reordered)


def _copy_node(node: onnx.NodeProto) -> onnx.NodeProto:
    copied = onnx.NodeProto()
    copied.CopyFrom(node)
    return copied


def _reads(node: onnx.NodeProto) -> set[str]:
    """Tensor names a node reads, including the outer-scope names its subgraphs use."""
    names = {n for n in node.input if n}
    for sub in _subgraphs(node):
        for inner in sub.node:
            names |= _reads(inner)
    return names


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        graphs.extend(attr.graphs)
    return graphs
