"""Walking an ONNX model: every graph (subgraphs of If/Loop/Scan included), node and tensor.

Loading (external data), validation (op support) and fingerprints all need the same traversal;
this module is the one place that knows where ONNX keeps graphs and tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import onnx

DEFAULT_DOMAIN = ""
"""The default operator domain as kiln names it (ONNX also spells it ``ai.onnx``)."""


def normalize_domain(domain: str) -> str:
    return DEFAULT_DOMAIN if domain in ("", "ai.onnx") else domain


def opset_versions(opset_import: Any) -> dict[str, int]:
    """``{domain: version}`` of an ``opset_import`` list, the default domain keyed ``""``."""
    return {normalize_domain(o.domain): int(o.version) for o in opset_import}


def subgraphs(node: Any) -> Iterator[Any]:
    """The graphs held in a node's attributes (``If`` branches, ``Loop``/``Scan`` bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every graph nested in it, depth first, in node order."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from graphs(sub)


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node with where it lives and the opsets that apply to it."""

    node: Any
    index: int
    graph_name: str
    opsets: dict[str, int]
    function: str | None = None

    @property
    def label(self) -> str:
        """``node 'name' (OpType)``, or ``node #3 (OpType) in graph 'g'`` for an unnamed node."""
        name = f"{self.node.name!r}" if self.node.name else f"#{self.index}"
        where = f" in function {self.function!r}" if self.function else ""
        if not self.node.name and not self.function:
            where = f" in graph {self.graph_name!r}"
        return f"node {name} ({self.node.op_type}){where}"


def nodes(model: Any) -> Iterator[NodeRef]:
    """Every node of the model: main graph, subgraphs, and bodies of model-local functions."""
    model_opsets = opset_versions(model.opset_import)
    for graph in graphs(model.graph):
        for index, node in enumerate(graph.node):
            yield NodeRef(node, index, graph.name, model_opsets)
    for function in model.functions:
        opsets = {**model_opsets, **opset_versions(function.opset_import)}
        for index, node in enumerate(function.node):
            yield NodeRef(node, index, function.name, opsets, function=function.name)
            for sub in subgraphs(node):
                for sub_graph in graphs(sub):
                    for sub_index, sub_node in enumerate(sub_graph.node):
                        yield NodeRef(sub_node, sub_index, sub_graph.name, opsets, function=function.name)


def _attribute_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        for sparse in attr.sparse_tensors:
            yield sparse.values
            yield sparse.indices


def _graph_tensors(graph: Any) -> Iterator[Any]:
    for sub in graphs(graph):
        yield from sub.initializer
        for sparse in sub.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in sub.node:
            yield from _attribute_tensors(node)


def tensors(model: Any) -> Iterator[Any]:
    """Every ``TensorProto`` that can hold data: initializers (dense and both parts of sparse ones)
    and tensors in node attributes, in every graph and function."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _attribute_tensors(node)
            for sub in subgraphs(node):
                yield from _graph_tensors(sub)


def is_external(tensor: Any) -> bool:
    return bool(tensor.data_location == onnx.TensorProto.EXTERNAL)
