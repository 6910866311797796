"""Values flowing through a converted ONNX graph, and the context an op runs in.

A value is either a ``torch.Tensor`` or a *host value*: a Python scalar (``int``, ``float``,
``bool``, or a symbolic size while tracing) or a flat Python ``list`` of them. Shape arithmetic
(``Shape`` -> ``Gather`` -> ``Concat`` -> ``Reshape``) stays in host values, so that
``torch.compile`` and ``torch.export`` see plain Python sizes instead of data-dependent tensors.
Small integer initializers and ``Constant`` nodes start out as host values for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch

Value: TypeAlias = Any
"""A ``torch.Tensor``, a host scalar or list, or ``None`` for an absent optional input."""

HOST_MAX_ELEMENTS = 64
"""Integer initializers and constants up to this many elements are kept as host values."""

ONNX_FLOAT = 1
_ONNX_TO_TORCH: dict[int, torch.dtype] = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    4: torch.uint16,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    12: torch.uint32,
    13: torch.uint64,
    16: torch.bfloat16,
}
INT_TYPES = frozenset({2, 3, 4, 5, 6, 7, 12, 13})


@dataclass
class Ctx:
    """What one forward call of a converted graph shares between its ops.

    ``float_dtype`` is what ONNX ``FLOAT`` becomes (the engine's compute precision);
    ``index_flags`` collects, per gathered tensor, whether any index was out of range (indices are
    clamped so the device never reads outside a table; the engine turns a raised flag into
    ``InvalidInput``).
    """

    float_dtype: torch.dtype
    opset: int
    device: torch.device
    index_flags: list[torch.Tensor] = field(default_factory=list)

    def dtype(self, onnx_type: int) -> torch.dtype:
        if onnx_type == ONNX_FLOAT:
            return self.float_dtype
        return torch_dtype(onnx_type)


def torch_dtype(onnx_type: int) -> torch.dtype:
    """The torch dtype of an ONNX element type; ``KeyError`` for strings and other exotic types."""
    return _ONNX_TO_TORCH[onnx_type]


def is_tensor(value: Value) -> bool:
    return isinstance(value, torch.Tensor)


def is_host(value: Value) -> bool:
    return value is not None and not isinstance(value, torch.Tensor)


def host_list(value: Value) -> list[Any]:
    """A host value (or a small tensor, read back) as a flat Python list."""
    if isinstance(value, torch.Tensor):
        return list(value.reshape(-1).tolist())
    return list(value) if isinstance(value, list) else [value]


def host_scalar(value: Value) -> Any:
    items = host_list(value)
    if len(items) != 1:
        raise ValueError(f"expected one value, got {len(items)}")
    return items[0]


def to_tensor(
    value: Value, like: torch.Tensor | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """A tensor for ``value``; host values land on ``like``'s device (the CPU without one)."""
    if isinstance(value, torch.Tensor):
        return value if dtype is None else value.to(dtype)
    device = like.device if like is not None else None
    if dtype is None:
        dtype = _host_dtype(value, like)
    data = torch.tensor(value, dtype=dtype, device=device)
    return data


def _host_dtype(value: Value, like: torch.Tensor | None) -> torch.dtype:
    items = host_list(value)
    if items and all(isinstance(v, bool) for v in items):
        return torch.bool
    if any(isinstance(v, float) for v in items):
        return like.dtype if like is not None and like.is_floating_point() else torch.float32
    return torch.int64


def host_binary(fn: Callable[[Any, Any], Any], a: Value, b: Value) -> Value:
    """``fn`` applied element-wise to two host values, broadcasting scalars and length-1 lists."""
    if not isinstance(a, list) and not isinstance(b, list):
        return fn(a, b)
    left, right = host_list(a), host_list(b)
    if len(left) == 1 and len(right) != 1:
        left = left * len(right)
    if len(right) == 1 and len(left) != 1:
        right = right * len(left)
    if len(left) != len(right):
        raise ValueError(f"cannot broadcast host values of lengths {len(left)} and {len(right)}")
    return [fn(x, y) for x, y in zip(left, right, strict=True)]


def host_cast(value: Value, onnx_type: int) -> Value:
    """Cast a host value to an ONNX element type (ints truncate like ONNX's Cast)."""
    if onnx_type in INT_TYPES:
        convert: Callable[[Any], Any] = _to_int
    elif onnx_type == 9:
        convert = bool
    else:
        convert = float
    if isinstance(value, list):
        return [convert(v) for v in value]
    return convert(value)


def _to_int(v: Any) -> Any:
    if isinstance(v, float):
        return math.trunc(v)
    return v if not isinstance(v, bool) else int(v)


def resolve_shape(target: Sequence[Any], shape: Sequence[Any], *, allow_zero: bool) -> list[Any]:
    """ONNX Reshape's target: ``0`` copies the input's dimension (unless ``allow_zero``), one
    ``-1`` is inferred (left to torch)."""
    dims = []
    for index, dim in enumerate(target):
        if not allow_zero and isinstance(dim, int) and dim == 0:
            dims.append(shape[index])
        else:
            dims.append(dim)
    return dims
