"""Weight scales a refit recomputes, where the symmetric int8 weight rule provably applies.

ONNX Runtime's quantizer gives an int8 weight a *symmetric* scale: per output channel (or per
tensor) ``max|w| / 127``, zero point 0 (``1.0`` for an all-zero channel), and the bias of the
same node the scale ``input_scale * weight_scale``, zero point 0. A refit that kept the base's
scales would quantize new weights on stale ranges (larger weights clip, smaller ones lose
levels); where the rule holds, the refit computes the new weights' own scales instead, as a
rebuild would, and writes them into the engine beside the weights.

The rule is trusted for one weight only when all of this holds at build time (otherwise its
scales stay the stored ones, and the map says why in ``scales.kept``):

* the weight is int8, its zero points are all 0 and its stored scales are the rule's scales of
  its own values (to float32 rounding);
* the engine holds the weight's scale initializer under its precision-pass name with the same
  value, and the engine nodes that read it are exactly those that read the quantized weight;
* every bias quantized against it is read by those nodes only, has zero point 0 and the scale
  ``input_scale * weight_scale`` with a constant input scale, and its own scale initializer is
  not in the engine (the fused node derives it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kiln.types import Array

if TYPE_CHECKING:
    import onnx

SYMMETRIC = "symmetric"
_QMAX = 127.0
_RTOL = 2e-7  # one float32 rounding


def symmetric_scale(weight: Array, axis: int, channels: int) -> Array:
    """The symmetric int8 scale of ``weight`` as ONNX Runtime's quantizer computes it: float32
    ``max|w| / 127`` per channel along ``axis`` (``channels`` > 1) or over the whole tensor,
    ``1.0`` where that maximum is 0 (or below float32's smallest normal)."""
    values = np.abs(np.asarray(weight, dtype=np.float32))
    if channels > 1:
        if values.ndim == 0 or values.shape[axis] != channels:
            raise ValueError(f"weight {list(values.shape)} has no {channels} channels on axis {axis}")
        peak = np.moveaxis(values, axis, 0).reshape(channels, -1).max(axis=1, initial=0.0)
    else:
        peak = np.array([values.max(initial=0.0)], dtype=np.float32)
    scale = (peak.astype(np.float64) * 2.0 / (2.0 * _QMAX)).astype(np.float32)
    return np.where(peak < np.finfo(np.float32).tiny, np.float32(1.0), scale).astype(np.float32)


def bias_scale(input_scale: Array, weight_scale: Array) -> Array:
    """The bias scale of ONNX Runtime's quantizer: the float32 product of the two scales."""
    return (np.asarray(input_scale, dtype=np.float32) * np.asarray(weight_scale, dtype=np.float32)).ravel()


def same_scale(a: Array, b: Array) -> bool:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=_RTOL, atol=0.0))


@dataclass(frozen=True)
class QuantWeight:
    """One quantized initializer of the precision-pass model, as the quantizer wrote it."""

    name: str  # the quantized initializer, e.g. ``conv.weight_quantized``
    source: str  # the model weight, e.g. ``conv.weight``
    scale_name: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int
    dtype: str


@dataclass
class ScalePlan:
    """Changes to the refit map's entries, and which weights kept their stored scales and why
    (``kept`` is empty when every quantized initializer's scale is recomputed)."""

    entries: dict[str, dict[str, object]] = field(default_factory=dict)
    recomputed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict[str, object]:
        return {
            "rule": SYMMETRIC,
            "recomputed": len(self.recomputed),
            "kept": dict(sorted(self.kept.items())),
        }


def plan_scales(
    precise: onnx.ModelProto,
    engine: onnx.ModelProto,
    quantized: Mapping[str, QuantWeight],
    source_weights: Mapping[str, Array],
) -> ScalePlan:
    """Which weights of the map (``quantized``: its requantized entries by engine name) get their
    scales recomputed on refit, and the entries that say so (see the module docstring)."""
    from onnx import numpy_helper

    pre = {t.name: numpy_helper.to_array(t) for t in precise.graph.initializer}
    held = {t.name: numpy_helper.to_array(t) for t in engine.graph.initializer}
    readers: dict[str, set[int]] = {}
    for index, node in enumerate(engine.graph.node):
        for name in node.input:
            readers.setdefault(name, set()).add(index)
    biases = _bias_links(precise, quantized, pre)
    plan = ScalePlan()
    for name, weight in quantized.items():
        if name in biases:
            continue
        if weight.dtype != "int8":
            plan.kept[weight.source] = f"quantized to {weight.dtype}, not int8"
            continue
        linked = [b for b, (w, _) in biases.items() if w == name]
        why = _refusal(weight, source_weights, held, readers, pre) or next(
            (r for b in linked if (r := _bias_refusal(b, biases[b], quantized, held, readers))), None
        )
        if why is not None:
            plan.kept[weight.source] = why
            continue
        channels = len(weight.scale)
        plan.entries[name] = {"scale_rule": SYMMETRIC}
        plan.entries[weight.scale_name] = {
            "kind": "scale",
            "source": weight.source,
            "axis": weight.axis,
            "channels": channels,
        }
        for bias in linked:
            plan.entries[bias] = {
                "scale_from": {
                    "weight": weight.source,
                    "axis": weight.axis,
                    "channels": channels,
                    "input_scale": float(np.asarray(biases[bias][1]).ravel()[0]),
                }
            }
        plan.recomputed.append(weight.source)
    for name, weight in quantized.items():
        if name not in plan.entries and weight.source not in plan.kept:
            plan.kept[weight.source] = "its scale does not follow a recomputed weight's"
    return plan


def _refusal(
    weight: QuantWeight,
    source_weights: Mapping[str, Array],
    held: Mapping[str, Array],
    readers: Mapping[str, set[int]],
    pre: Mapping[str, Array],
) -> str | None:
    if any(z != 0 for z in weight.zero_point):
        return "zero point is not 0"
    values = source_weights.get(weight.source)
    if values is None:
        return "the model weight is not an initializer"
    try:
        rule = symmetric_scale(values, weight.axis, len(weight.scale))
    except ValueError as exc:
        return str(exc)
    if not same_scale(rule, np.array(weight.scale)):
        return "stored scales are not max|w|/127 of the weight"
    stored = held.get(weight.scale_name)
    if stored is None or not same_scale(stored, pre[weight.scale_name]):
        return f"the engine does not hold the scale {weight.scale_name!r} as built"
    if not readers.get(weight.scale_name) or readers.get(weight.scale_name) != readers.get(weight.name):
        return "the engine reads the scale apart from the weight"
    return None


def _bias_refusal(
    bias: str,
    link: tuple[str, Array],
    quantized: Mapping[str, QuantWeight],
    held: Mapping[str, Array],
    readers: Mapping[str, set[int]],
) -> str | None:
    weight_name, input_scale = link
    entry, weight = quantized[bias], quantized[weight_name]
    if any(z != 0 for z in entry.zero_point) or np.asarray(input_scale).size != 1:
        return f"bias {entry.source!r} is not quantized on a zero point 0 and one input scale"
    if not same_scale(bias_scale(input_scale, np.array(weight.scale)), np.array(entry.scale)):
        return f"bias {entry.source!r} scale is not input_scale * weight_scale"
    if entry.scale_name in held:
        return f"the engine holds the bias scale {entry.scale_name!r}"
    if not readers.get(bias, set()) <= readers.get(weight_name, set()):
        return f"the engine reads bias {entry.source!r} apart from the weight"
    return None


def _bias_links(
    precise: onnx.ModelProto, quantized: Mapping[str, QuantWeight], pre: Mapping[str, Array]
) -> dict[str, tuple[str, Array]]:
    """Quantized bias -> (quantized weight of the same node, the node's input scale), from the
    precision-pass graph: a node fed by dequantized weight, bias and one activation."""
    dequantized: dict[str, tuple[str, str]] = {}  # DQ output -> (quantized input, scale)
    for node in precise.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) >= 2:
            dequantized[node.output[0]] = (node.input[0], node.input[1])
    links: dict[str, tuple[str, Array]] = {}
    for node in precise.graph.node:
        feeds = [dequantized[i] for i in node.input if i in dequantized]
        weights = [q for q, _ in feeds if q in quantized and not _is_bias(quantized[q], pre)]
        bias = [q for q, _ in feeds if q in quantized and _is_bias(quantized[q], pre)]
        activations = [s for q, s in feeds if q not in pre]
        if len(bias) == 1 and len(weights) == 1 and len(activations) == 1 and activations[0] in pre:
            links[bias[0]] = (weights[0], pre[activations[0]])
    return links


def _is_bias(weight: QuantWeight, pre: Mapping[str, Array]) -> bool:
    return weight.dtype == "int32" and pre[weight.name].ndim <= 1


def new_scale(entry: Mapping[str, object], weights: Mapping[str, Array]) -> Array:
    """The scale a refit writes for a map entry: the symmetric scale of the entry's ``source``
    (or ``weight``) along ``axis`` over ``channels``, times ``input_scale`` for a bias. Raises
    ``KeyError``/``ValueError``/``TypeError`` when the entry does not fit the weights."""
    return ScaleMemo(weights).get(entry)


class ScaleMemo:
    """:func:`new_scale` for one refit, each weight's symmetric scale computed once (a weight,
    its scale initializer and its bias all need it)."""

    def __init__(self, weights: Mapping[str, Array]) -> None:
        self._weights = weights
        self._found: dict[tuple[str, int, int], Array] = {}

    def get(self, entry: Mapping[str, object]) -> Array:
        name = str(entry.get("weight", entry.get("source")))
        channels = int(entry["channels"])  # type: ignore[call-overload]
        axis = int(entry["axis"])  # type: ignore[call-overload]
        key = (name, axis, channels)
        if key not in self._found:
            self._found[key] = symmetric_scale(self._weights[name], axis, channels)
        scale = self._found[key]
        if "input_scale" in entry:
            return bias_scale(np.float32(float(entry["input_scale"])), scale)  # type: ignore[arg-type]
        return scale
