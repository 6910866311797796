"""The refit map of an ONNX Runtime engine: where each engine initializer's value comes from.

The engine file is ONNX Runtime's own optimized graph, so its initializers are not the model's:
some are carried as they are, some re-laid out (NCHWc convolution weights are padded and
blocked), some quantized (int8 QDQ weights and biases), some made by the optimizer and
independent of the weights (shape constants). The map is found at build time, in two steps:

1. Model -> precision-pass model (``fp32``: the same; ``fp16``: a cast; ``int8``: quantization
   with the scale and zero point of the ``DequantizeLinear`` that reads the tensor, checked by
   recomputing it).
2. Precision-pass model -> engine, by probing: the model is optimized once more with its weights
   replaced by probe values. A float32 weight becomes the running numbers 1, 2, 3... of its
   elements, so that an engine initializer holding integers is an index map into the weights (a
   re-layout; 0 is padding) and is checked against the real engine exactly; other weights get a
   changed value, so that anything in the engine that depends on them shows.

Each engine initializer is then ``carried`` (a model weight, possibly cast), ``requantized`` (a
model weight through its stored int8 scale), ``gathered`` (a re-layout of weights, by a stored
index) or ``pinned`` (unchanged by the probe: independent of the weights). Anything else makes
the engine not refittable, with the reason recorded. Model initializers that the map does not
recompute (shape constants, scalars folded into fused nodes, weights the pre-processing folded)
are recorded by hash: a model that changes one of them is not refitted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.compile.backends.onnxruntime_refit_scales import QuantWeight, plan_scales
from kiln.types import Array

if TYPE_CHECKING:
    import onnx

MAP_FORMAT = 1
PROBE_LIMIT = 2**24 - 1
"""Float32 represents the integers up to 2**24 exactly: the most weight elements one probe indexes."""
INDEX_FILE = "refit_index.npz"


class Unmappable(Exception):
    """The engine cannot be mapped with confidence; the message says why."""


@dataclass(frozen=True)
class SourceRule:
    """How one precision-pass initializer derives from a model initializer."""

    kind: str  # "same" | "cast" | "quant"
    source: str
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    axis: int = 1
    scale_name: str = ""


@dataclass
class RefitMap:
    """The map as recorded in the manifest (``to_json``) plus the index arrays of ``gathered``."""

    entries: dict[str, dict[str, object]] = field(default_factory=dict)
    unchanged: dict[str, str] = field(default_factory=dict)
    indices: dict[str, Array] = field(default_factory=dict)
    requantized_weights: int = 0
    scales: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        kinds: dict[str, int] = {}
        for entry in self.entries.values():
            kinds[str(entry["kind"])] = kinds.get(str(entry["kind"]), 0) + 1
        return {
            "format": MAP_FORMAT,
            "refittable": True,
            "counts": dict(sorted(kinds.items())),
            "entries": self.entries,
            "unchanged": self.unchanged,
            "index_file": INDEX_FILE if self.indices else None,
            **({"scales": self.scales} if self.scales is not None else {}),
        }


def not_refittable(reason: str) -> dict[str, object]:
    """The manifest record of an engine that cannot be refitted, and why."""
    return {"format": MAP_FORMAT, "refittable": False, "reason": reason}


def tensor_digest(array: Array) -> str:
    data = np.ascontiguousarray(array)
    head = f"{data.dtype.str}{data.shape}".encode()
    return hashlib.sha256(head + data.tobytes()).hexdigest()


def arrays(model: onnx.ModelProto) -> dict[str, Array]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def quantize(values: Array, scale: Array, zero_point: Array, axis: int, dtype: np.dtype[Any]) -> Array:
    """Round-half-even quantization with saturation, per tensor or along ``axis`` (as ONNX
    Runtime's quantizer does); returns the values in ``dtype``."""
    return quantize_counting(values, scale, zero_point, axis, dtype)[0]


def quantize_counting(
    values: Array, scale: Array, zero_point: Array, axis: int, dtype: np.dtype[Any]
) -> tuple[Array, int]:
    """:func:`quantize`, and how many values saturated (were clipped to the type's range).
    Float32 values quantized to 8 or 16 bits are divided in float32, as ONNX Runtime's weight
    quantizer does; anything else (int32 biases) in float64, as its bias quantizer does."""
    narrow = np.asarray(values).dtype == np.float32 and np.dtype(dtype).itemsize <= 2
    work = np.float32 if narrow else np.float64
    x = np.asarray(values, dtype=work)
    s = np.asarray(scale, dtype=work)
    z = np.asarray(zero_point, dtype=work)
    if s.ndim == 1 and s.size > 1:
        shape = [1] * x.ndim
        shape[axis] = s.size
        s, z = s.reshape(shape), z.reshape(shape)
    info = np.iinfo(dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(x / np.where(s == 0, work(1.0), s)) + z
    clipped = int(np.count_nonzero((q < info.min) | (q > info.max)))
    return np.clip(q, info.min, info.max).astype(dtype), clipped


def source_rules(source: onnx.ModelProto, precise: onnx.ModelProto) -> dict[str, SourceRule]:
    """How each initializer of the precision-pass model ``precise`` derives from ``source``'s.
    Initializers with no rule (QDQ scales and zero points, constants the passes made) are
    independent of the weights by design; one that is neither is ``Unmappable``."""
    src, pre = arrays(source), arrays(precise)
    dq_params = _dq_params(precise)
    qdq_params = {n for node in precise.graph.node if node.op_type in _QDQ for n in node.input[1:]}
    rules: dict[str, SourceRule] = {}
    for name, value in pre.items():
        original = src.get(name)
        if original is not None and original.dtype == value.dtype and np.array_equal(original, value):
            rules[name] = SourceRule("same", name)
        elif original is not None and value.dtype == np.float16 and original.dtype == np.float32:
            if not np.array_equal(original.astype(np.float16), value):
                raise Unmappable(f"fp16 initializer {name!r} is not the model's value cast to float16")
            rules[name] = SourceRule("cast", name)
        elif name.endswith("_quantized") and name[: -len("_quantized")] in src and name in dq_params:
            rules[name] = _quant_rule(name, value, src[name[: -len("_quantized")]], dq_params[name], pre)
        elif original is not None:
            raise Unmappable(f"initializer {name!r} was changed by the precision pass in an unknown way")
        elif name not in qdq_params:
            raise Unmappable(f"the precision pass made initializer {name!r}, which kiln cannot recompute")
    return rules


_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _dq_params(model: onnx.ModelProto) -> dict[str, tuple[str, str | None, int]]:
    found: dict[str, tuple[str, str | None, int]] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 2:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
        found[node.input[0]] = (node.input[1], zero, axis)
    return found


def _quant_rule(
    name: str, value: Array, original: Array, params: tuple[str, str | None, int], pre: Mapping[str, Array]
) -> SourceRule:
    scale_name, zero_name, axis = params
    if scale_name not in pre or (zero_name is not None and zero_name not in pre):
        raise Unmappable(f"quantized initializer {name!r} has a scale or zero point that is not constant")
    scale = pre[scale_name].astype(np.float64).ravel()
    zero = (pre[zero_name] if zero_name else np.zeros_like(scale)).astype(np.int64).ravel()
    axis = axis if axis >= 0 else axis + original.ndim
    again = quantize(original, scale, zero, axis, value.dtype)
    if (
        again.shape != value.shape
        or np.abs(again.astype(np.int64) - value.astype(np.int64)).max(initial=0) > 1
    ):
        raise Unmappable(f"requantizing {name!r} from the model's weight does not give the built value")
    return SourceRule(
        "quant",
        name[: -len("_quantized")],
        tuple(float(s) for s in scale),
        tuple(int(z) for z in zero),
        axis,
        scale_name,
    )


@dataclass(frozen=True)
class Probe:
    """The precision-pass model with probe values, and which initializers got which kind."""

    model: onnx.ModelProto
    indexed: dict[str, tuple[int, int]]  # name -> (first index, count); index 0 is padding
    left: frozenset[str] = frozenset()  # weight-derived initializers the probe did not change


def make_probe(
    precise: onnx.ModelProto, rules: Mapping[str, SourceRule], carried: set[str], *, scalars: str = "all"
) -> Probe:
    """``precise`` with every weight-derived initializer changed: float32 weights not carried by
    name into the engine get running indices, the others a shifted value. ``scalars`` says which
    one-element initializers carried into the engine are changed too: ``all``, ``ranked`` (not
    the rank-0 ones: constants such as Gelu's 1.0 that a fusion matches on) or ``none``; those
    left alone must stay unchanged for a refit."""
    import onnx
    from onnx import numpy_helper

    probe = onnx.ModelProto()
    probe.CopyFrom(precise)
    indexed: dict[str, tuple[int, int]] = {}
    left: set[str] = set()
    next_index = 1
    for i, tensor in enumerate(probe.graph.initializer):
        if tensor.name not in rules:
            continue
        value = numpy_helper.to_array(tensor)
        same = rules[tensor.name].kind == "same"
        if same and not np.issubdtype(value.dtype, np.floating):
            left.add(tensor.name)  # integer model constants: must stay unchanged
            continue
        if same and value.size <= 1 and not _probe_scalar(tensor.name, value, carried, scalars):
            left.add(tensor.name)
            continue  # a constant the optimizer may fuse on its value (Gelu's 0.5): must stay unchanged
        if value.dtype == np.float32 and tensor.name not in carried:
            if next_index + value.size > PROBE_LIMIT:
                raise Unmappable(f"more than {PROBE_LIMIT:,} re-laid-out weight elements to probe")
            probed = np.arange(next_index, next_index + value.size, dtype=np.float32).reshape(value.shape)
            indexed[tensor.name] = (next_index, value.size)
            next_index += value.size
        else:
            probed = _shifted(value)  # type: ignore[assignment]
        probe.graph.initializer[i].CopyFrom(numpy_helper.from_array(probed, tensor.name))
    return Probe(probe, indexed, frozenset(left))


def _probe_scalar(name: str, value: Array, carried: set[str], scalars: str) -> bool:
    if name not in carried or scalars == "none":
        return False
    return scalars == "all" or value.ndim > 0


def _shifted(value: Array) -> Array:
    if np.issubdtype(value.dtype, np.integer):
        info = np.iinfo(value.dtype)  # type: ignore[type-var]
        wide = value.astype(np.int64) + 1
        return np.where(wide > info.max, info.min, wide).astype(value.dtype)
    return (value.astype(np.float64) * 1.5 + 0.25).astype(value.dtype)


def same_structure(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """Same nodes (type, inputs, outputs, attributes) and initializer names, types and shapes."""

    def shape(model: onnx.ModelProto) -> tuple[object, ...]:
        nodes = tuple(
            (
                n.op_type,
                n.domain,
                tuple(n.input),
                tuple(n.output),
                tuple(x.SerializeToString() for x in n.attribute),
            )
            for n in model.graph.node
        )
        inits = tuple(sorted((t.name, t.data_type, tuple(t.dims)) for t in model.graph.initializer))
        return nodes, inits

    return shape(a) == shape(b)


def map_engine(
    *,
    source: onnx.ModelProto,
    rules: Mapping[str, SourceRule],
    precise: onnx.ModelProto,
    engine: onnx.ModelProto,
    probe: Probe,
    probed_engine: onnx.ModelProto,
) -> RefitMap:
    """Classify every engine initializer from the real and the probed optimization."""
    if not same_structure(engine, probed_engine):
        raise Unmappable("ONNX Runtime optimized the graph differently for other weight values")
    pre, pre_probe = arrays(precise), arrays(probe.model)
    real, probed = arrays(engine), arrays(probed_engine)
    result = RefitMap()
    used: set[str] = set()
    for name, value in real.items():
        entry = _classify(name, value, probed[name], pre, pre_probe, rules, probe, result)
        if entry is not None:
            result.entries[name] = entry
            named = entry.get("sources", [entry.get("source")])
            if isinstance(named, list):
                used.update(str(s) for s in named if s)
    kept = {rules[n].source for n in probe.left}
    weights = arrays(source)
    for name, value in weights.items():
        if name not in used or name in kept:
            result.unchanged[name] = tensor_digest(value)
    if result.requantized_weights:
        _plan_scales(result, rules, precise, engine, weights)
    return result


def _plan_scales(
    result: RefitMap,
    rules: Mapping[str, SourceRule],
    precise: onnx.ModelProto,
    engine: onnx.ModelProto,
    weights: Mapping[str, Array],
) -> None:
    """Mark the int8 weights whose scales a refit recomputes (``onnxruntime_refit_scales``)."""
    quantized = {
        name: QuantWeight(
            name,
            rules[name].source,
            rules[name].scale_name,
            rules[name].scale,
            rules[name].zero_point,
            rules[name].axis,
            str(entry["dtype"]),
        )
        for name, entry in result.entries.items()
        if entry["kind"] == "requantized"
    }
    plan = plan_scales(precise, engine, quantized, weights)
    for name, change in plan.entries.items():
        result.entries[name] = change if "kind" in change else {**result.entries[name], **change}
    result.scales = plan.record()


def _classify(  # noqa: PLR0917
    name: str,
    value: Array,
    probed: Array,
    pre: Mapping[str, Array],
    pre_probe: Mapping[str, Array],
    rules: Mapping[str, SourceRule],
    probe: Probe,
    result: RefitMap,
) -> dict[str, object] | None:
    rule = rules.get(name)
    carried = name in pre and pre[name].dtype == value.dtype and np.array_equal(pre[name], value)
    if carried and rule is not None and name not in probe.indexed:
        if rule.kind == "same" and not np.issubdtype(value.dtype, np.floating):
            return None  # an integer model constant: must stay unchanged
        if not np.array_equal(probed, pre_probe[name]):
            raise Unmappable(f"engine initializer {name!r} carries a weight but did not follow it")
        if rule.kind == "quant":
            result.requantized_weights += 1
            return {
                "kind": "requantized",
                "source": rule.source,
                "scale": list(rule.scale),
                "zero_point": list(rule.zero_point),
                "axis": rule.axis,
                "dtype": str(value.dtype),
            }
        return {"kind": "carried", "source": rule.source, "dtype": str(value.dtype)}
    if np.array_equal(probed, value):
        return {"kind": "pinned"}
    cast = _cast_back(value, probed, pre, pre_probe, rules)
    if cast is not None:
        return cast
    if value.dtype == np.float32 and probe.indexed:
        return _gathered(name, value, probed, pre, rules, probe, result)
    raise Unmappable(f"engine initializer {name!r} depends on the weights in a way kiln cannot recompute")


def _cast_back(
    value: Array,
    probed: Array,
    pre: Mapping[str, Array],
    pre_probe: Mapping[str, Array],
    rules: Mapping[str, SourceRule],
) -> dict[str, object] | None:
    """A float16 weight that the optimizer cast back to float32 (CPU kernels without float16),
    followed by the probe too: ``carried`` through float16."""
    for name, rule in rules.items():
        low = pre[name]
        if rule.kind != "cast" or low.shape != value.shape:
            continue
        if np.array_equal(low.astype(value.dtype), value) and np.array_equal(
            pre_probe[name].astype(value.dtype), probed
        ):
            return {
                "kind": "carried",
                "source": rule.source,
                "dtype": str(value.dtype),
                "via": str(low.dtype),
            }
    return None


def _gathered(  # noqa: PLR0917
    name: str,
    value: Array,
    probed: Array,
    pre: Mapping[str, Array],
    rules: Mapping[str, SourceRule],
    probe: Probe,
    result: RefitMap,
) -> dict[str, object]:
    index = probed.astype(np.float64)
    if not np.array_equal(index, np.rint(index)) or index.min() < 0:
        raise Unmappable(f"engine initializer {name!r} is computed from the weights, not a re-layout of them")
    flat = index.astype(np.int64).ravel()
    names = sorted(probe.indexed, key=lambda n: probe.indexed[n][0])
    starts = np.array([probe.indexed[n][0] for n in names], dtype=np.int64)
    ends = starts + np.array([probe.indexed[n][1] for n in names], dtype=np.int64)
    read = flat != 0
    owner = np.searchsorted(starts, flat, side="right") - 1
    if np.any(read & ((owner < 0) | (flat >= ends[np.maximum(owner, 0)]))):
        raise Unmappable(f"engine initializer {name!r} reads outside the probed weights")
    used = np.unique(owner[read])
    sources = [names[i] for i in used]
    offsets = np.zeros(len(names), dtype=np.int64)
    offsets[used] = np.concatenate(([0], np.cumsum(ends[used] - starts[used])[:-1]))
    local = np.where(read, flat - starts[np.maximum(owner, 0)] + offsets[np.maximum(owner, 0)], -1)
    offset = int(np.sum(ends[used] - starts[used]))
    rebuilt = gather([pre[s] for s in sources], local, value.shape)
    if not np.array_equal(rebuilt, value):
        raise Unmappable(f"engine initializer {name!r} is not exactly a re-layout of the weights")
    key = f"g{len(result.indices)}"
    result.indices[key] = local.astype(np.int32 if offset < 2**31 else np.int64)
    return {"kind": "gathered", "sources": [rules[s].source for s in sources], "index": key}


def gather(sources: list[Array], local: Array, shape: tuple[int, ...]) -> Array:
    """The values ``local`` indexes in the sources' concatenation; -1 is a zero (padding)."""
    pool = np.concatenate(
        [np.asarray(s, dtype=np.float32).ravel() for s in sources] + [np.zeros(1, np.float32)]
    )
    index = np.asarray(local, dtype=np.int64)
    picked = np.where(index < 0, pool.size - 1, index)
    return pool[picked].reshape(shape)
