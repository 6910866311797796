"""ONNX operators that move, select or describe data: shapes, reshapes, slices, gathers, padding.

Shape operands (``Reshape``'s target, ``Slice``'s bounds, ``Unsqueeze``'s axes...) are read as host
values, so traced graphs keep static sizes. ``Gather`` with tensor indices guards the device: it
records whether any index was out of range and clamps, so a bad request is refused rather than
reading outside an embedding table (which on CUDA would poison the whole process).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as nnf

from kiln.compile.backends.torch.ops_math import Op
from kiln.compile.backends.torch.values import (
    Ctx,
    Value,
    host_list,
    host_scalar,
    is_host,
    resolve_shape,
    to_tensor,
)


def _axes(ctx: Ctx, ins: list[Value], attrs: dict[str, Any], since: int) -> list[int] | None:
    """Axes given as an attribute before opset ``since`` and as the second input from it on."""
    if ctx.opset < since:
        axes = attrs.get("axes")
        return None if axes is None else [int(a) for a in axes]
    if len(ins) > 1 and ins[1] is not None:
        return [int(a) for a in host_list(ins[1])]
    return None


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def shape(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = ins[0]
    dims = (
        list(x.shape) if isinstance(x, torch.Tensor) else [len(host_list(x))] if isinstance(x, list) else []
    )
    start, end = attrs.get("start", 0), attrs.get("end")
    return [dims[start:end]]


def size(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = ins[0]
    return [x.numel() if isinstance(x, torch.Tensor) else len(host_list(x))]


def reshape(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    target = resolve_shape(host_list(ins[1]), list(x.shape), allow_zero=bool(attrs.get("allowzero", 0)))
    return [x.reshape(target)]


def flatten(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    axis = _norm(int(attrs.get("axis", 1)), x.dim())
    return [x.reshape(math.prod(x.shape[:axis]), -1)]


def transpose(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    perm = attrs.get("perm") or list(reversed(range(x.dim())))
    return [x.permute(*[int(p) for p in perm])]


def squeeze(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x, axes = ins[0], _axes(ctx, ins, attrs, 13)
    if is_host(x):
        return [host_scalar(x)]
    if axes is None:
        return [x.squeeze()]
    return [x.squeeze(tuple(_norm(a, x.dim()) for a in axes))]


def unsqueeze(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x, axes = ins[0], _axes(ctx, ins, attrs, 13) or []
    if is_host(x) and not isinstance(x, list) and axes in ([0], [-1]):
        return [[x]]
    x = to_tensor(x)
    rank = x.dim() + len(axes)
    for axis in sorted(_norm(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return [x]


def concat(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    parts = [v for v in ins if v is not None]
    if all(is_host(v) for v in parts):
        return [[item for v in parts for item in host_list(v)]]
    like = next(v for v in parts if isinstance(v, torch.Tensor))
    tensors = [to_tensor(v, like, like.dtype) for v in parts]
    return [torch.cat(tensors, dim=int(attrs.get("axis", 0)))]


def split(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    axis = _norm(int(attrs.get("axis", 0)), x.dim())
    count = int(attrs["_num_outputs"])
    if ctx.opset < 13:
        sizes = attrs.get("split")
    else:
        sizes = host_list(ins[1]) if len(ins) > 1 and ins[1] is not None else None
    if sizes is None:
        length = x.shape[axis]
        chunk = -(-length // count)
        sizes = [min(chunk, length - chunk * i) for i in range(count)]
    return list(torch.split(x, [int(s) for s in sizes], dim=axis))


def slice_(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = ins[0]
    if ctx.opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = host_list(ins[1]), host_list(ins[2])
        axes = host_list(ins[3]) if len(ins) > 3 and ins[3] is not None else None
        steps = host_list(ins[4]) if len(ins) > 4 and ins[4] is not None else None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    if any(int(s) < 1 for s in steps):
        raise NotImplementedError("Slice with steps < 1 is not supported by the torch backend")
    if is_host(x):
        values = host_list(x)
        return [values[int(starts[0]) : int(ends[0]) : int(steps[0])]]
    index: list[slice] = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[_norm(int(axis), x.dim())] = slice(start, end, step)
    return [x[tuple(index)]]


def gather(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    data, idx = ins
    axis = int(attrs.get("axis", 0))
    if is_host(data) and is_host(idx):
        values = host_list(data)
        picked = [values[int(i)] for i in host_list(idx)]
        return [picked if isinstance(idx, list) else picked[0]]
    data = to_tensor(data)
    axis = _norm(axis, data.dim())
    if is_host(idx):
        if not isinstance(idx, list):
            return [data.select(axis, int(idx))]
        length = data.shape[axis]
        normalized = [int(i) + length if int(i) < 0 else int(i) for i in idx]
        return [data.index_select(axis, torch.tensor(normalized, device=data.device))]
    return [_gather_tensor(ctx, data, idx, axis)]


def _gather_tensor(ctx: Ctx, data: torch.Tensor, idx: torch.Tensor, axis: int) -> torch.Tensor:
    length = data.shape[axis]
    ctx.index_flags.append(((idx < -length) | (idx >= length)).any())
    safe = torch.where(idx < 0, idx + length, idx).clamp(0, length - 1)
    if axis == 0 and data.dim() == 2:
        return nnf.embedding(safe, data)
    picked = data.index_select(axis, safe.reshape(-1))
    return picked.reshape(*data.shape[:axis], *safe.shape, *data.shape[axis + 1 :])


def expand(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    target = torch.broadcast_shapes(tuple(x.shape), tuple(host_list(ins[1])))  # type: ignore[no-untyped-call]
    return [x.expand(target)]


def tile(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    return [to_tensor(ins[0]).repeat(*[int(r) for r in host_list(ins[1])])]


def constant_of_shape(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    dims = host_list(ins[0]) if ins and ins[0] is not None else []
    value = attrs.get("value")
    fill, onnx_type = (value[0].reshape(-1)[0].item(), value[1]) if value is not None else (0.0, 1)
    return [torch.full(dims, fill, dtype=ctx.dtype(onnx_type), device=ctx.device)]


def range_(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    start, limit, delta = (_scalar(v) for v in ins)
    tensors = [v for v in ins if isinstance(v, torch.Tensor)]
    dtype = tensors[0].dtype if tensors else None
    if dtype is None:
        dtype = ctx.float_dtype if any(isinstance(v, float) for v in (start, limit, delta)) else torch.int64
    return [torch.arange(start, limit, delta, dtype=dtype, device=ctx.device)]


def _scalar(value: Value) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    return host_scalar(value)


def dropout(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    return [ins[0]]


def pad(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    if ctx.opset < 11:
        pads, value = list(attrs["pads"]), float(attrs.get("value", 0.0))
    else:
        pads = host_list(ins[1])
        value = _scalar(ins[2]) if len(ins) > 2 and ins[2] is not None else 0
    axes = host_list(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(x.dim()))
    half = len(pads) // 2
    per_axis = {_norm(int(a), x.dim()): (pads[i], pads[i + half]) for i, a in enumerate(axes)}
    padded = [a for a, pair in per_axis.items() if pair != (0, 0)]
    if not padded:
        return [x]
    pairs: list[Any] = []
    for axis in reversed(range(min(padded), x.dim())):
        pairs += list(per_axis.get(axis, (0, 0)))
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[
        str(attrs.get("mode", "constant"))
    ]
    if mode == "constant":
        return [nnf.pad(x, pairs, mode="constant", value=value)]
    return [nnf.pad(x, pairs, mode=mode)]


SHAPE_OPS: dict[str, Op] = {
    "Shape": shape,
    "Size": size,
    "Reshape": reshape,
    "Flatten": flatten,
    "Transpose": transpose,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Gather": gather,
    "Expand": expand,
    "Tile": tile,
    "ConstantOfShape": constant_of_shape,
    "Range": range_,
    "Dropout": dropout,
    "Pad": pad,
}
