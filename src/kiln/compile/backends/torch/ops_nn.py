"""ONNX neural-network operators in torch: convolution, pooling, normalization, softmax, matrix
products and reductions."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as nnf

from kiln.compile.backends.torch.ops_math import Op
from kiln.compile.backends.torch.values import Ctx, Value, host_list, to_tensor

_CONV: dict[int, Callable[..., torch.Tensor]] = {1: nnf.conv1d, 2: nnf.conv2d, 3: nnf.conv3d}
_MAX_POOL: dict[int, Callable[..., torch.Tensor]] = {1: nnf.max_pool1d, 2: nnf.max_pool2d, 3: nnf.max_pool3d}
_AVG_POOL: dict[int, Callable[..., torch.Tensor]] = {1: nnf.avg_pool1d, 2: nnf.avg_pool2d, 3: nnf.avg_pool3d}


def _ints(attrs: dict[str, Any], name: str, count: int, default: int) -> list[int]:
    values = attrs.get(name)
    return [int(v) for v in values] if values else [default] * count


def _pads(
    attrs: dict[str, Any],
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[list[int], list[int]]:
    """(begins, ends) per spatial axis, from ``pads`` or ``auto_pad``."""
    auto = str(attrs.get("auto_pad", "NOTSET"))
    count = len(kernel)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            begins.append(small if auto == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        return begins, ends
    if auto == "VALID":
        return [0] * count, [0] * count
    pads = _ints(attrs, "pads", 2 * count, 0)
    return pads[:count], pads[count:]


def _pad_pairs(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    pairs: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends), strict=True):
        pairs += [begin, end]
    return pairs


def conv_geometry(
    x: torch.Tensor, w: torch.Tensor, attrs: dict[str, Any]
) -> tuple[list[int], list[int], list[int], list[int], tuple[int, ...]]:
    """(strides, pad begins, pad ends, dilations, output shape) of an ONNX ``Conv``."""
    count = w.dim() - 2
    kernel = list(w.shape[2:])
    strides, dilations = _ints(attrs, "strides", count, 1), _ints(attrs, "dilations", count, 1)
    begins, ends = _pads(attrs, list(x.shape[2:]), kernel, strides, dilations)
    spatial = [
        (size + b + e - d * (k - 1) - 1) // s + 1
        for size, b, e, d, k, s in zip(x.shape[2:], begins, ends, dilations, kernel, strides, strict=True)
    ]
    return strides, begins, ends, dilations, (int(x.shape[0]), int(w.shape[0]), *spatial)


def conv(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x, w = to_tensor(ins[0]), ins[1]
    bias = ins[2] if len(ins) > 2 else None
    count = w.dim() - 2
    strides, begins, ends, dilations, _ = conv_geometry(x, w, attrs)
    padding: Any = begins
    if begins != ends:
        x, padding = nnf.pad(x, _pad_pairs(begins, ends)), 0
    group = int(attrs.get("group", 1))
    return [_CONV[count](x, w, bias, strides, padding, dilations, group)]


def max_pool(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    kernel = [int(k) for k in attrs["kernel_shape"]]
    count = len(kernel)
    strides, dilations = _ints(attrs, "strides", count, 1), _ints(attrs, "dilations", count, 1)
    begins, ends = _pads(attrs, list(x.shape[2:]), kernel, strides, dilations)
    padding: Any = begins
    if begins != ends or any(p > k // 2 for p, k in zip(begins, kernel, strict=True)):
        x, padding = nnf.pad(x, _pad_pairs(begins, ends), value=-math.inf), 0
    ceil = bool(attrs.get("ceil_mode", 0))
    return [_MAX_POOL[count](x, kernel, strides, padding, dilations, ceil_mode=ceil)]


def average_pool(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    kernel = [int(k) for k in attrs["kernel_shape"]]
    count = len(kernel)
    strides = _ints(attrs, "strides", count, 1)
    begins, ends = _pads(attrs, list(x.shape[2:]), kernel, strides, [1] * count)
    include = bool(attrs.get("count_include_pad", 0))
    padding: Any = begins
    if begins != ends or any(p > k // 2 for p, k in zip(begins, kernel, strict=True)):
        if not include:
            raise NotImplementedError(
                "AveragePool with asymmetric or oversized pads and count_include_pad=0 is not supported"
            )
        x, padding = nnf.pad(x, _pad_pairs(begins, ends)), 0
    ceil = bool(attrs.get("ceil_mode", 0))
    return [_AVG_POOL[count](x, kernel, strides, padding, ceil_mode=ceil, count_include_pad=include)]


def global_average_pool(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    return [x.mean(dim=tuple(range(2, x.dim())), keepdim=True)]


def global_max_pool(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    return [x.amax(dim=tuple(range(2, x.dim())), keepdim=True)]


def batch_norm(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x, scale, bias, mean, var = ins[:5]
    eps = float(attrs.get("epsilon", 1e-5))
    return [nnf.batch_norm(to_tensor(x), mean, var, scale, bias, False, 0.0, eps)]


def instance_norm(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x, scale, bias = ins[:3]
    return [nnf.instance_norm(to_tensor(x), weight=scale, bias=bias, eps=float(attrs.get("epsilon", 1e-5)))]


def layer_norm(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    scale = ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axis = int(attrs.get("axis", -1))
    axis = axis + x.dim() if axis < 0 else axis
    eps = float(attrs.get("epsilon", 1e-5))
    return [nnf.layer_norm(x, list(x.shape[axis:]), scale, bias, eps)]


def _softmax(fn: Callable[..., torch.Tensor]) -> Op:
    def op(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
        x = to_tensor(ins[0])
        if ctx.opset >= 13:
            return [fn(x, dim=int(attrs.get("axis", -1)))]
        axis = int(attrs.get("axis", 1))
        axis = axis + x.dim() if axis < 0 else axis
        flat = x.reshape(math.prod(x.shape[:axis]), -1)
        return [fn(flat, dim=1).reshape(x.shape)]

    return op


def gemm(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    a, b = to_tensor(ins[0]), to_tensor(ins[1])
    c = ins[2] if len(ins) > 2 else None
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if attrs.get("transA", 0):
        a = a.t()
    weight = b if attrs.get("transB", 0) else b.t()
    if alpha == 1.0 and beta == 1.0 and (c is None or isinstance(c, torch.Tensor)):
        return [nnf.linear(a, weight, c)]
    y = nnf.linear(a, weight) * alpha
    if c is not None:
        y = y + to_tensor(c, y, y.dtype) * beta
    return [y]


def matmul(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    return [torch.matmul(to_tensor(ins[0]), to_tensor(ins[1]))]


def einsum(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    return [torch.einsum(str(attrs["equation"]), *[to_tensor(v) for v in ins])]


def _reduce(fn: Callable[[torch.Tensor, list[int], bool], torch.Tensor], axes_input_since: int) -> Op:
    def op(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
        x = to_tensor(ins[0])
        keep = bool(attrs.get("keepdims", 1))
        if ctx.opset < axes_input_since:
            axes = attrs.get("axes")
        else:
            axes = host_list(ins[1]) if len(ins) > 1 and ins[1] is not None else None
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.dim()))
        return [fn(x, [int(a) for a in axes], keep)]

    return op


def _prod(x: torch.Tensor, axes: list[int], keep: bool) -> torch.Tensor:
    for axis in sorted((a + x.dim() if a < 0 else a for a in axes), reverse=True):
        x = x.prod(dim=axis, keepdim=keep)
    return x


def _arg(fn: Callable[..., torch.Tensor]) -> Op:
    def op(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
        x = to_tensor(ins[0])
        return [fn(x, dim=int(attrs.get("axis", 0)), keepdim=bool(attrs.get("keepdims", 1)))]

    return op


NN_OPS: dict[str, Op] = {
    "Conv": conv,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "GlobalAveragePool": global_average_pool,
    "GlobalMaxPool": global_max_pool,
    "BatchNormalization": batch_norm,
    "InstanceNormalization": instance_norm,
    "LayerNormalization": layer_norm,
    "Softmax": _softmax(torch.softmax),
    "LogSoftmax": _softmax(torch.log_softmax),
    "Gemm": gemm,
    "MatMul": matmul,
    "Einsum": einsum,
    "ReduceMean": _reduce(lambda x, a, k: x.mean(dim=a, keepdim=k), 18),
    "ReduceSum": _reduce(lambda x, a, k: x.sum(dim=a, keepdim=k), 13),
    "ReduceMax": _reduce(lambda x, a, k: x.amax(dim=a, keepdim=k), 18),
    "ReduceMin": _reduce(lambda x, a, k: x.amin(dim=a, keepdim=k), 18),
    "ReduceProd": _reduce(_prod, 18),
    "ArgMax": _arg(torch.argmax),
    "ArgMin": _arg(torch.argmin),
}
