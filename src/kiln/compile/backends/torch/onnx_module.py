"""ONNX graph -> ``torch.nn.Module``: the torch backend's converter.

``convert_onnx`` turns a (validated) ONNX model into an :class:`OnnxModule` whose ``forward`` runs
the graph's nodes in order with the torch implementations of ``onnx_ops.OPS``. The module is plain
Python over torch calls, so ``torch.compile`` traces it into one graph and ``torch.export`` exports
it. Weights become buffers named ``w0, w1, ...`` in initializer order (the ONNX names are kept in
``OnnxModule.weight_sources``), so two models of the same structure have the same state-dict keys:
that is what a weight refit copies.

Precision: ONNX ``FLOAT`` becomes ``float_dtype`` everywhere inside the graph (initializers, casts,
constants); float inputs are cast on entry and outputs are returned in their declared types.
Nodes named in ``keep_fp32_nodes`` or of a type in ``keep_fp32_op_types`` compute in float32 (their
float inputs are cast up, their outputs back down), and initializers only they use stay float32.

``forward`` returns the graph's outputs followed by one extra 0-d bool tensor: whether any
``Gather`` index was out of range (see ``ops_shape``). The engine strips it and refuses the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from kiln.compile.backends.torch.onnx_fusion import fuse_conv_relu
from kiln.compile.backends.torch.onnx_graph import attribute, constant_tensor, host_value, is_host_initializer
from kiln.compile.backends.torch.onnx_ops import OPS, TorchOpSupport, node_problem
from kiln.compile.backends.torch.ops_math import Op
from kiln.compile.backends.torch.values import (
    ONNX_FLOAT,
    Ctx,
    Value,
    host_list,
    torch_dtype,
)
from kiln.errors import BuildError, describe

_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Step:
    """One ONNX node, ready to run: its torch op, value names (``""`` = absent) and attributes."""

    name: str
    op_type: str
    op: Op
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    keep_fp32: bool


@dataclass(frozen=True)
class Weight:
    """A weight buffer: module attribute, source initializer, and the tensor (``None`` = empty)."""

    attr: str
    source: str
    onnx_type: int
    dims: tuple[int, ...]
    dtype: torch.dtype
    channels_last: bool
    array: np.ndarray[Any, Any] | None


class OnnxModule(torch.nn.Module):
    """A converted ONNX graph (see the module docstring)."""

    def __init__(
        self,
        *,
        steps: Sequence[Step],
        weights: Sequence[Weight],
        host: dict[str, Value],
        inputs: Sequence[tuple[str, int]],
        outputs: Sequence[tuple[str, int]],
        float_dtype: torch.dtype,
        opset: int,
        device: torch.device,
        channels_last: bool,
    ) -> None:
        super().__init__()
        self._steps = tuple(steps)
        self._host = dict(host)
        self._inputs = tuple(inputs)
        self._outputs = tuple(outputs)
        self.float_dtype = float_dtype
        self.opset = opset
        self.channels_last = channels_last
        self.weight_sources = {w.attr: w.source for w in weights}
        self._weight_names = tuple((w.source, w.attr) for w in weights)
        for weight in weights:
            self.register_buffer(weight.attr, _weight_tensor(weight, device))

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._outputs)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        device = args[0].device if args else torch.device("cpu")
        ctx = Ctx(self.float_dtype, self.opset, device)
        ctx32 = Ctx(torch.float32, self.opset, device, ctx.index_flags)
        env: dict[str, Value] = dict(self._host)
        for source, attr in self._weight_names:
            env[source] = getattr(self, attr)
        for (name, onnx_type), value in zip(self._inputs, args, strict=True):
            env[name] = self._enter(value, onnx_type)
        for step in self._steps:
            values = [env[name] if name else None for name in step.inputs]
            if step.keep_fp32:
                values = [_retype(v, self.float_dtype, torch.float32) for v in values]
            outs = step.op(ctx32 if step.keep_fp32 else ctx, values, step.attrs)
            if step.keep_fp32:
                outs = [_retype(v, torch.float32, self.float_dtype) for v in outs]
            for name, value in zip(step.outputs, outs, strict=False):
                if name:
                    env[name] = value
        results = tuple(_leave(env[name], onnx_type, device) for name, onnx_type in self._outputs)
        flags = ctx.index_flags
        flag = torch.stack(flags).any() if flags else torch.zeros((), dtype=torch.bool, device=device)
        return (*results, flag)

    def _enter(self, value: torch.Tensor, onnx_type: int) -> torch.Tensor:
        if onnx_type == ONNX_FLOAT and self.float_dtype != torch.float32:
            value = value.to(self.float_dtype)
        if self.channels_last and value.dim() == 4 and value.is_floating_point():
            value = value.contiguous(memory_format=torch.channels_last)
        return value


def _retype(value: Value, source: torch.dtype, target: torch.dtype) -> Value:
    if isinstance(value, torch.Tensor) and value.dtype == source and source != target:
        return value.to(target)
    return value


def _leave(value: Value, onnx_type: int, device: torch.device) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        items = host_list(value)
        value = torch.tensor(items if isinstance(value, list) else items[0], device=device)
    result: torch.Tensor = value.to(torch_dtype(onnx_type)).contiguous()
    return result


def _weight_tensor(weight: Weight, device: torch.device) -> torch.Tensor:
    fmt = torch.channels_last if weight.channels_last else torch.contiguous_format
    if weight.array is None:
        return torch.empty(weight.dims, dtype=weight.dtype, device=device).contiguous(memory_format=fmt)
    array = weight.array if weight.array.flags.writeable else weight.array.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=weight.dtype)
    return tensor.contiguous(memory_format=fmt)


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert: compute precision, kept-fp32 nodes/op types, layout and target device;
    ``conv_fusion`` folds Conv->Relu and Conv->Add->Relu into cuDNN fused steps (``onnx_fusion``).

    ``with_weights=False`` leaves weight buffers empty (to be filled by ``load_state_dict``) and
    reads only the small integer initializers the graph's shape arithmetic needs.
    """

    float_dtype: torch.dtype = torch.float32
    keep_fp32_nodes: tuple[str, ...] = ()
    keep_fp32_op_types: tuple[str, ...] = ()
    channels_last: bool = False
    device: str = "cpu"
    with_weights: bool = True
    conv_fusion: bool = False


def convert_onnx(model: onnx.ModelProto, options: ConvertOptions | None = None) -> OnnxModule:
    """Convert ``model``; ``BuildError`` listing every node the converter cannot handle."""
    options = options or ConvertOptions()
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), 0)
    _check_keep(graph, options)
    steps, constants = _steps(graph, opset, options)
    if options.conv_fusion:
        steps = fuse_conv_relu(steps, {v.name for v in graph.output})
    initializers = [*graph.initializer, *constants]
    host = {t.name: host_value(t) for t in initializers if is_host_initializer(t)}
    weights = _weights([t for t in initializers if not is_host_initializer(t)], steps, options)
    init_names = {t.name for t in graph.initializer}
    inputs = [(v.name, v.type.tensor_type.elem_type) for v in graph.input if v.name not in init_names]
    outputs = [(v.name, v.type.tensor_type.elem_type) for v in graph.output]
    return OnnxModule(
        steps=steps,
        weights=weights,
        host=host,
        inputs=inputs,
        outputs=outputs,
        float_dtype=options.float_dtype,
        opset=opset,
        device=torch.device(options.device),
        channels_last=options.channels_last,
    )


def _check_keep(graph: onnx.GraphProto, options: ConvertOptions) -> None:
    names = {node.name for node in graph.node}
    unknown = sorted(set(options.keep_fp32_nodes) - names)
    if unknown:
        sample = ", ".join(sorted(n for n in names if n)[:8])
        raise BuildError(
            describe(
                "keep_fp32_nodes names nodes that are not in the graph",
                seen=unknown,
                fix=f"use node names of the model (e.g. {sample})",
            )
        )


def _steps(graph: onnx.GraphProto, opset: int, options: ConvertOptions) -> tuple[list[Step], list[Any]]:
    support = TorchOpSupport()
    steps: list[Step] = []
    constants: list[Any] = []
    problems: list[str] = []
    for index, node in enumerate(graph.node):
        label = f"node {node.name or f'#{index}'} ({node.op_type})"
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
            constants.append(constant_tensor(node))
            continue
        reason = support.unsupported(node.domain, node.op_type, opset)
        attrs = {a.name: attribute(a) for a in node.attribute}
        if reason is None and any(a.type in (5, 10) for a in node.attribute):  # GRAPH, GRAPHS
            reason = "control flow (subgraphs) is not supported"
        reason = reason or node_problem(node.op_type, attrs, len(node.input), len(node.output))
        if reason is not None:
            problems.append(f"{label}: {reason}")
            continue
        attrs["_num_outputs"] = len(node.output)
        keep = node.name in options.keep_fp32_nodes or node.op_type in options.keep_fp32_op_types
        steps.append(
            Step(
                node.name, node.op_type, OPS[node.op_type], tuple(node.input), tuple(node.output), attrs, keep
            )
        )
    if problems:
        raise BuildError(
            describe(
                f"the torch backend cannot convert {len(problems)} node(s) of this ONNX model",
                seen="; ".join(problems[:10])
                + (f"; and {len(problems) - 10} more" if len(problems) > 10 else ""),
                fix="use the onnxruntime backend for it, or export the model with torch.export and build "
                "the .pt2",
            )
        )
    return steps, constants


def _weights(
    tensors: Iterable[onnx.TensorProto], steps: Sequence[Step], options: ConvertOptions
) -> list[Weight]:
    users: dict[str, list[Step]] = {}
    conv_weights: set[str] = set()
    for step in steps:
        for name in step.inputs:
            users.setdefault(name, []).append(step)
        if step.op_type == "Conv" and len(step.inputs) > 1:
            conv_weights.add(step.inputs[1])
    weights = []
    for index, tensor in enumerate(tensors):
        kept = bool(users.get(tensor.name)) and all(s.keep_fp32 for s in users[tensor.name])
        onnx_type = int(tensor.data_type)
        dtype = torch_dtype(onnx_type)
        if onnx_type == ONNX_FLOAT and not kept:
            dtype = options.float_dtype
        layout = options.channels_last and tensor.name in conv_weights and len(tensor.dims) == 4
        array = numpy_helper.to_array(tensor) if options.with_weights else None
        weights.append(Weight(f"w{index}", tensor.name, onnx_type, tuple(tensor.dims), dtype, layout, array))
    return weights
