"""Folding ONNX ``Conv`` -> ``Relu`` and ``Conv`` -> ``Add`` -> ``Relu`` into one step that runs
cuDNN's fused kernels (backend option ``conv_fusion=cudnn``).

Convolutional nets spend much of their time writing a convolution's output and reading it back for
the bias, the residual add and the ReLU; a fused kernel applies them before the output leaves the
chip. A step is fused only when the intermediate values have no other user and are not graph
outputs, so the graph computes the same function. The fused step runs cuDNN's kernel for fp16/bf16
2-D convolutions with symmetric padding on CUDA, and the unfused ops anywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kiln.compile.backends.torch.ops_nn import conv, conv_geometry
from kiln.compile.backends.torch.values import Ctx, Value, to_tensor

_HALF = (torch.float16, torch.bfloat16)


def _cudnn_ready(x: torch.Tensor, w: Any, attrs: dict[str, Any]) -> tuple[list[int], ...] | None:
    if not (x.is_cuda and x.dtype in _HALF and isinstance(w, torch.Tensor) and w.dim() == 4):
        return None
    if w.dtype != x.dtype:
        return None
    strides, begins, ends, dilations, _ = conv_geometry(x, w, attrs)
    return (strides, begins, dilations) if begins == ends else None


def conv_relu(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    """``relu(conv(x, w, b))``; inputs ``[x, w, b or None]``."""
    x, w, b = to_tensor(ins[0]), ins[1], ins[2]
    ready = _cudnn_ready(x, w, attrs)
    if ready is not None:
        strides, padding, dilations = ready
        group = int(attrs.get("group", 1))
        return [torch.ops.aten.cudnn_convolution_relu(x, w, b, strides, padding, dilations, group)]
    return [torch.relu(conv(ctx, [x, w] if b is None else [x, w, b], attrs)[0])]


def conv_add_relu(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    """``relu(conv(x, w, b) + z)``; inputs ``[x, w, b or None, z]``."""
    x, w, b, z = to_tensor(ins[0]), ins[1], ins[2], to_tensor(ins[3])
    ready = _cudnn_ready(x, w, attrs)
    if ready is not None and z.dtype == x.dtype:
        strides, padding, dilations = ready
        out_shape = conv_geometry(x, w, attrs)[4]
        if tuple(z.shape) == out_shape:
            group = int(attrs.get("group", 1))
            fused = torch.ops.aten.cudnn_convolution_add_relu(
                x, w, z, 1.0, b, strides, padding, dilations, group
            )
            return [fused]
    return [torch.relu(conv(ctx, [x, w] if b is None else [x, w, b], attrs)[0] + z)]


def fuse_conv_relu(steps: Sequence[Any], graph_outputs: set[str]) -> list[Any]:
    """``steps`` with Conv->Relu and Conv->Add->Relu chains folded (see the module docstring)."""
    users: dict[str, list[int]] = {}
    for index, step in enumerate(steps):
        for name in step.inputs:
            if name:
                users.setdefault(name, []).append(index)

    def only_user(name: str, op_type: str) -> int | None:
        found = users.get(name, [])
        if len(found) != 1 or name in graph_outputs:
            return None
        step = steps[found[0]]
        return found[0] if step.op_type == op_type and not step.keep_fp32 else None

    replaced: dict[int, Any] = {}
    for index, step in enumerate(steps):
        if step.op_type != "Conv" or step.keep_fp32 or index in replaced:
            continue
        head = (step.inputs[0], step.inputs[1], step.inputs[2] if len(step.inputs) > 2 else "")
        relu = only_user(step.outputs[0], "Relu")
        if relu is not None:
            replaced[index] = None
            replaced[relu] = _fused(step, "Conv+Relu", conv_relu, head, steps[relu].outputs)
            continue
        add = only_user(step.outputs[0], "Add")
        relu = None if add is None else only_user(steps[add].outputs[0], "Relu")
        if add is None or relu is None or add in replaced:
            continue
        others = [n for n in steps[add].inputs if n != step.outputs[0]]
        if len(others) != 1 or not others[0]:
            continue
        replaced[index] = replaced[add] = None
        replaced[relu] = _fused(step, "Conv+Add+Relu", conv_add_relu, (*head, others[0]), steps[relu].outputs)
    fused = [replaced.get(i, step) for i, step in enumerate(steps)]
    return [step for step in fused if step is not None]


def _fused(conv_step: Any, op_type: str, op: Any, inputs: tuple[str, ...], outputs: Sequence[str]) -> Any:
    from dataclasses import replace

    return replace(conv_step, op_type=op_type, op=op, inputs=inputs, outputs=tuple(outputs))
