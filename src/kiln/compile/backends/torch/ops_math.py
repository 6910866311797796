"""Element-wise ONNX operators in torch: arithmetic, comparisons, logic, activations, casts.

Every op takes ``(ctx, inputs, attrs)`` and returns its outputs as a list. Host values (see
``values``) stay on the host when every input is one, so shape arithmetic never becomes a tensor.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as nnf

from kiln.compile.backends.torch.values import (
    Ctx,
    Value,
    host_binary,
    host_cast,
    is_host,
    is_tensor,
    to_tensor,
)

Op = Callable[[Ctx, list[Value], dict[str, Any]], list[Value]]


def _int_div(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool):
        return int(a / b) if b else 0
    if isinstance(a, float) or isinstance(b, float):
        return a / b
    return a // b


def _tensor_div(a: torch.Tensor, b: Any) -> torch.Tensor:
    if not a.is_floating_point() and not (isinstance(b, torch.Tensor) and b.is_floating_point()):
        return torch.div(a, b, rounding_mode="trunc")
    return torch.div(a, b)


def _operand(value: Value, other: Value) -> Any:
    """A binary op's operand: tensors as they are, host scalars as Python numbers, host lists as
    tensors like the other operand."""
    if is_tensor(value) or not isinstance(value, list):
        return value
    like = other if is_tensor(other) else None
    return to_tensor(value, like, like.dtype if like is not None else None)


def binary(host_fn: Callable[[Any, Any], Any], tensor_fn: Callable[[Any, Any], torch.Tensor]) -> Op:
    def op(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
        a, b = ins
        if is_host(a) and is_host(b):
            return [host_binary(host_fn, a, b)]
        if not is_tensor(a):
            a = to_tensor(a, b, b.dtype if not isinstance(a, bool) else None)
        return [tensor_fn(a, _operand(b, a))]

    return op


def variadic(tensor_fn: Callable[[Any, Any], torch.Tensor], host_fn: Callable[[Any, Any], Any]) -> Op:
    step = binary(host_fn, tensor_fn)

    def op(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
        return [functools.reduce(lambda acc, x: step(ctx, [acc, x], attrs)[0], ins[1:], ins[0])]

    return op


def unary(
    tensor_fn: Callable[[torch.Tensor], torch.Tensor], host_fn: Callable[[Any], Any] | None = None
) -> Op:
    def op(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
        (x,) = ins[:1]
        if is_host(x):
            if host_fn is not None:
                return [[host_fn(v) for v in x] if isinstance(x, list) else host_fn(x)]
            x = to_tensor(x)
        return [tensor_fn(x)]

    return op


def with_attrs(make: Callable[[dict[str, Any]], Callable[[torch.Tensor], torch.Tensor]]) -> Op:
    """A unary tensor op whose function depends on the node's attributes."""

    def op(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
        return [make(attrs)(to_tensor(ins[0]))]

    return op


def cast(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    to = int(attrs["to"])
    (x,) = ins
    if is_host(x):
        return [host_cast(x, to)]
    return [x.to(ctx.dtype(to))]


def cast_like(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x, like = ins
    return [to_tensor(x).to(to_tensor(like).dtype)]


def where(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    cond, a, b = ins
    if all(is_host(v) for v in ins):
        conds = cond if isinstance(cond, list) else [cond]
        left = a if isinstance(a, list) else [a] * len(conds)
        right = b if isinstance(b, list) else [b] * len(conds)
        picked = [x if c else y for c, x, y in zip(conds, left, right, strict=True)]
        return [picked if isinstance(cond, list) or isinstance(a, list) else picked[0]]
    like = next(v for v in (a, b, cond) if is_tensor(v))
    tensor_a = to_tensor(a, like, like.dtype if like is not cond else None)
    return [torch.where(to_tensor(cond, like, torch.bool), tensor_a, _operand(b, tensor_a))]


def clip(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    x = to_tensor(ins[0])
    low = _bound(ins[1] if len(ins) > 1 else None, attrs.get("min"))
    high = _bound(ins[2] if len(ins) > 2 else None, attrs.get("max"))
    return [torch.clamp(x, low, high)]


def _bound(value: Value, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value
    return value[0] if isinstance(value, list) else value


def identity(ctx: Ctx, ins: list[Value], attrs: dict[str, Any]) -> list[Value]:
    return [ins[0]]


def _gelu(attrs: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    approximate = str(attrs.get("approximate", "none"))
    return lambda x: nnf.gelu(x, approximate=approximate)


def _hard_sigmoid(attrs: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


def _leaky_relu(attrs: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    alpha = float(attrs.get("alpha", 0.01))
    return lambda x: nnf.leaky_relu(x, alpha)


def _elu(attrs: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    alpha = float(attrs.get("alpha", 1.0))
    return lambda x: nnf.elu(x, alpha)


MATH_OPS: dict[str, Op] = {
    "Add": binary(operator.add, torch.add),
    "Sub": binary(operator.sub, torch.sub),
    "Mul": binary(operator.mul, torch.mul),
    "Div": binary(_int_div, _tensor_div),
    "Pow": binary(operator.pow, torch.pow),
    "Equal": binary(operator.eq, torch.eq),
    "Less": binary(operator.lt, torch.lt),
    "LessOrEqual": binary(operator.le, torch.le),
    "Greater": binary(operator.gt, torch.gt),
    "GreaterOrEqual": binary(operator.ge, torch.ge),
    "And": binary(lambda a, b: bool(a and b), torch.logical_and),
    "Or": binary(lambda a, b: bool(a or b), torch.logical_or),
    "Xor": binary(lambda a, b: bool(a) != bool(b), torch.logical_xor),
    "Max": variadic(torch.maximum, max),
    "Min": variadic(torch.minimum, min),
    "Sum": variadic(torch.add, operator.add),
    "Not": unary(torch.logical_not, lambda v: not v),
    "Neg": unary(torch.neg, operator.neg),
    "Abs": unary(torch.abs, abs),
    "Floor": unary(torch.floor, math.floor),
    "Ceil": unary(torch.ceil, math.ceil),
    "Sqrt": unary(torch.sqrt, math.sqrt),
    "Relu": unary(torch.relu),
    "Sigmoid": unary(torch.sigmoid),
    "Tanh": unary(torch.tanh),
    "Exp": unary(torch.exp),
    "Log": unary(torch.log),
    "Erf": unary(torch.erf),
    "Reciprocal": unary(torch.reciprocal),
    "Sign": unary(torch.sign),
    "Softplus": unary(nnf.softplus),
    "HardSwish": unary(nnf.hardswish),
    "Sin": unary(torch.sin),
    "Cos": unary(torch.cos),
    "Gelu": with_attrs(_gelu),
    "HardSigmoid": with_attrs(_hard_sigmoid),
    "LeakyRelu": with_attrs(_leaky_relu),
    "Elu": with_attrs(_elu),
    "Cast": cast,
    "CastLike": cast_like,
    "Where": where,
    "Clip": clip,
    "Identity": identity,
}
