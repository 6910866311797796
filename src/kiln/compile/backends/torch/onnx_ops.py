"""Which ONNX operators the torch backend converts, and the per-node limits it checks.

The table is the union of ``ops_math``, ``ops_shape`` and ``ops_nn``: standard-domain (``ai.onnx``)
operators only, at opsets 11 and later. Beyond the op type, some nodes are refused for what they
ask: extra outputs nobody implements here (``MaxPool`` indices, ``Dropout`` masks, normalization
statistics), training-mode batch normalization, ``select_last_index``, ``wrap`` padding, and
control flow or sequences. Every refusal names the node and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from kiln.compile.backends.torch.ops_math import MATH_OPS, Op
from kiln.compile.backends.torch.ops_nn import NN_OPS
from kiln.compile.backends.torch.ops_shape import SHAPE_OPS
from kiln.errors import describe

ONNX_DOMAINS = frozenset({"", "ai.onnx"})
MIN_OPSET = 11

OPS: Mapping[str, Op] = MappingProxyType({**MATH_OPS, **SHAPE_OPS, **NN_OPS})
"""ONNX op type -> its torch implementation. ``Constant`` is folded when converting."""

SUPPORTED_OP_TYPES: tuple[str, ...] = tuple(sorted({*OPS, "Constant"}))

_FIX = "use the onnxruntime backend for this model, or export it with torch.export and build the .pt2"

_Check = Callable[[Mapping[str, Any], int, int], str | None]


def _single_output(what: str) -> _Check:
    def check(attrs: Mapping[str, Any], num_inputs: int, num_outputs: int) -> str | None:
        return f"its {what} output is not supported (only the first output is)" if num_outputs > 1 else None

    return check


def _batch_norm(attrs: Mapping[str, Any], num_inputs: int, num_outputs: int) -> str | None:
    if attrs.get("training_mode", 0):
        return "training_mode=1 is not supported (inference only)"
    return _single_output("running statistics")(attrs, num_inputs, num_outputs)


def _arg(attrs: Mapping[str, Any], num_inputs: int, num_outputs: int) -> str | None:
    return "select_last_index=1 is not supported" if attrs.get("select_last_index", 0) else None


def _pad(attrs: Mapping[str, Any], num_inputs: int, num_outputs: int) -> str | None:
    mode = str(attrs.get("mode", "constant"))
    return None if mode in ("constant", "reflect", "edge") else f"pad mode {mode!r} is not supported"


def _cast(attrs: Mapping[str, Any], num_inputs: int, num_outputs: int) -> str | None:
    to = int(attrs.get("to", 1))
    return None if to not in (8, 17, 18, 19, 20, 21, 22, 23) else f"cast to ONNX type {to} is not supported"


_CHECKS: dict[str, _Check] = {
    "MaxPool": _single_output("Indices"),
    "Dropout": _single_output("mask"),
    "LayerNormalization": _single_output("Mean/InvStdDev"),
    "BatchNormalization": _batch_norm,
    "ArgMax": _arg,
    "ArgMin": _arg,
    "Pad": _pad,
    "Cast": _cast,
}


def node_problem(op_type: str, attrs: Mapping[str, Any], num_inputs: int, num_outputs: int) -> str | None:
    """Why this node cannot be converted although its op type can (``None``: it can)."""
    check = _CHECKS.get(op_type)
    return check(attrs, num_inputs, num_outputs) if check is not None else None


class TorchOpSupport:
    """``OpSupport`` for the torch backend's ONNX converter (see the module docstring)."""

    def unsupported(self, domain: str, op_type: str, opset: int) -> str | None:
        """``None`` when the converter handles ``op_type`` of ``domain`` at ``opset``, else why not."""
        where = f"op {op_type!r} (domain {domain or 'ai.onnx'!r}, opset {opset})"
        if domain not in ONNX_DOMAINS:
            return describe(f"the torch backend converts standard ONNX ops only, not {where}", fix=_FIX)
        if op_type not in SUPPORTED_OP_TYPES:
            return describe(f"the torch backend's ONNX converter has no {where}", fix=_FIX)
        if opset < MIN_OPSET:
            return describe(
                f"the torch backend converts opset {MIN_OPSET} and later, not {where}",
                fix="convert the model with onnx.version_converter",
            )
        return None
