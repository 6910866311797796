"""Refitting an ONNX Runtime engine: the stored engine graph with new weights, no optimization pass.

``plan_refit`` records the refit map at build time (see ``onnxruntime_refit_map``; it costs one
more optimization of the model, with probe weights). ``apply_refit`` takes the stored engine,
recomputes every mapped initializer from the new model's weights (int8 weights requantized with
their own symmetric scales where the map found that rule, else with the stored scales and zero
points, clipping counted) and writes the new engine file into the
output folder atomically. Anything that does not fit the map raises ``RefitUnsupported`` naming
why, and leaves nothing behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.compile.backends.onnxruntime_build import ENGINE_DATA_FILE, ENGINE_FILE, optimize_with
from kiln.compile.backends.onnxruntime_refit_map import (
    INDEX_FILE,
    MAP_FORMAT,
    RefitMap,
    SourceRule,
    Unmappable,
    arrays,
    gather,
    make_probe,
    map_engine,
    not_refittable,
    quantize_counting,
    same_structure,
    source_rules,
    tensor_digest,
)
from kiln.compile.backends.onnxruntime_refit_scales import ScaleMemo
from kiln.compile.backends.onnxruntime_session import build_options
from kiln.errors import RefitUnsupported, describe
from kiln.types import Array

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class RefitPlan:
    """What the build records: the manifest's ``extra["refit"]`` and the index file, if any."""

    record: dict[str, object]
    files: tuple[str, ...]


def plan_refit(
    source: onnx.ModelProto,
    precise: onnx.ModelProto,
    out_dir: Path,
    workdir: Path,
    *,
    disabled_fusions: tuple[str, ...] = (),
) -> RefitPlan:
    """Map the engine ``out_dir/engine.onnx`` (built from ``precise``, the precision pass of
    ``source``) and write the index file beside it when re-laid-out weights need one.
    ``disabled_fusions``: the optimizers the engine was built without (the probe leaves them out too)."""
    import onnx

    if (out_dir / ENGINE_DATA_FILE).exists():
        return RefitPlan(not_refittable("the engine keeps its weights in external data"), ())
    try:
        engine = onnx.load(str(out_dir / ENGINE_FILE))
        rules = source_rules(source, precise)
        pre = arrays(precise)
        carried = {
            t.name
            for t in engine.graph.initializer
            if t.name in pre
            and np.array_equal(pre[t.name], _array(t))
            and pre[t.name].dtype == _array(t).dtype
        }
        mapped = _probe_and_map(source, rules, precise, engine, carried, workdir, disabled_fusions)
    except Unmappable as why:
        return RefitPlan(not_refittable(str(why)), ())
    files: tuple[str, ...] = ()
    if mapped.indices:
        np.savez(out_dir / INDEX_FILE, **mapped.indices)  # type: ignore[arg-type]
        files = (INDEX_FILE,)
    return RefitPlan(mapped.to_json(), files)


def _probe_and_map(  # noqa: PLR0917
    source: onnx.ModelProto,
    rules: Mapping[str, SourceRule],
    precise: onnx.ModelProto,
    engine: onnx.ModelProto,
    carried: set[str],
    workdir: Path,
    disabled_fusions: tuple[str, ...],
) -> RefitMap:
    """Probe with every weight changed; when that changes the optimized graph (a fusion matched
    on a constant's value), again with fewer one-element constants changed."""
    for scalars in ("all", "ranked", "none"):
        probe = make_probe(precise, rules, carried, scalars=scalars)
        probed = _optimize(probe.model, workdir, disabled_fusions)
        if same_structure(engine, probed):
            return map_engine(
                source=source, rules=rules, precise=precise, engine=engine, probe=probe, probed_engine=probed
            )
    raise Unmappable("ONNX Runtime optimized the graph differently for other weight values")


def _array(tensor: onnx.TensorProto) -> Array:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def _optimize(model: onnx.ModelProto, workdir: Path, disabled_fusions: tuple[str, ...]) -> onnx.ModelProto:
    import onnx

    path = workdir / "probe.onnx"
    try:
        optimize_with(model.SerializeToString(), build_options(str(path), None), disabled_fusions)
    except Exception as exc:  # ORT raises its own exception types
        raise Unmappable(f"ONNX Runtime could not optimize the probe model ({type(exc).__name__})") from exc
    probed = onnx.load(str(path))
    path.unlink(missing_ok=True)
    return probed


@dataclass(frozen=True)
class RefitResult:
    files: tuple[str, ...]
    clipped: int
    replaced: int


def apply_refit(
    record: Mapping[str, object],
    base_dir: Path,
    base_files: tuple[str, ...],
    model: onnx.ModelProto,
    out_dir: Path,
    *,
    engine_bytes: bytes | None = None,
) -> RefitResult:
    """Write ``base_dir``'s engine with ``model``'s weights into ``out_dir`` (plus copies of the
    files named in ``base_files``: the calibration table, the refit index). ``engine_bytes``: the
    base engine file's content when the caller has read it already. ``RefitUnsupported``
    when the map is missing, says the engine is not refittable, or does not fit the model or the
    engine; nothing is left in ``out_dir`` then."""
    written: list[Path] = []
    try:
        entries, unchanged = _read_record(record)
        weights = arrays(model)
        _check_unchanged(unchanged, weights)
        engine = _load_engine(base_dir, engine_bytes)
        indices = _load_indices(base_dir, record)
        clipped = _replace(engine, entries, weights, indices)
        target = out_dir / ENGINE_FILE
        _write_atomic(target, *serialized_in_pieces(engine))
        written.append(target)
        for name in base_files:
            if name == ENGINE_FILE:
                continue
            copy = out_dir / name
            _write_atomic(copy, (base_dir / name).read_bytes())
            written.append(copy)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return RefitResult(tuple(p.name for p in written), clipped, len(entries))


def _unsupported(what: str, seen: object = None) -> RefitUnsupported:
    return RefitUnsupported(describe(what, seen=seen, fix="the engine is rebuilt instead (nothing to do)"))


def _read_record(record: Mapping[str, object]) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    if record.get("format") != MAP_FORMAT:
        raise _unsupported("the engine has no refit map of a format this kiln reads", record.get("format"))
    if record.get("refittable") is not True:
        raise _unsupported(f"the engine is not refittable: {record.get('reason', 'no reason recorded')}")
    entries, unchanged = record.get("entries"), record.get("unchanged")
    if not isinstance(entries, dict) or not isinstance(unchanged, dict):
        raise _unsupported("the engine's refit map is malformed (entries/unchanged missing)")
    return entries, unchanged


def _check_unchanged(unchanged: Mapping[str, str], weights: Mapping[str, Array]) -> None:
    changed = sorted(
        n for n, digest in unchanged.items() if n not in weights or tensor_digest(weights[n]) != digest
    )
    if changed:
        raise _unsupported(
            f"{len(changed)} model initializer(s) the engine folded or treats as constant changed",
            changed[:5],
        )


def _load_engine(base_dir: Path, data: bytes | None) -> onnx.ModelProto:
    import onnx

    try:
        if data is None:
            data = (base_dir / ENGINE_FILE).read_bytes()
        engine = onnx.ModelProto()
        engine.ParseFromString(data)
        return engine
    except Exception as exc:  # protobuf's DecodeError and OSError alike
        raise _unsupported("the stored engine file cannot be read", type(exc).__name__) from exc


def _load_indices(base_dir: Path, record: Mapping[str, object]) -> dict[str, Array]:
    name = record.get("index_file")
    if name is None:
        return {}
    if name != INDEX_FILE or not (base_dir / INDEX_FILE).is_file():
        raise _unsupported("the engine's refit index file is missing", name)
    with np.load(base_dir / INDEX_FILE, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _replace(
    engine: onnx.ModelProto,
    entries: Mapping[str, Mapping[str, object]],
    weights: Mapping[str, Array],
    indices: Mapping[str, Array],
) -> int:
    from onnx import helper

    clipped = 0
    scales = ScaleMemo(weights)
    by_name = {t.name: t for t in engine.graph.initializer}
    missing = sorted(set(entries) - set(by_name))
    if missing:
        raise _unsupported("the refit map names initializers the engine does not hold", missing[:5])
    for name, entry in entries.items():
        kind = entry.get("kind")
        if kind == "pinned":
            continue
        tensor = by_name[name]  # its shape and type, without decoding the old values
        old = _Like(tuple(tensor.dims), np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)))
        try:
            value, lost = _value(entry, weights, indices, old, scales)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _unsupported(
                f"the refit map entry for {name!r} does not fit the model", repr(exc)[:200]
            ) from exc
        if value.shape != old.shape or value.dtype != old.dtype:
            raise _unsupported(
                f"refitted {name!r} has another shape or type than the engine's",
                f"{value.dtype}{list(value.shape)} vs {old.dtype}{list(old.shape)}",
            )
        clipped += lost
        _store(tensor, value)
    return clipped


@dataclass(frozen=True)
class _Like:
    """The shape and type an engine initializer must keep."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]


def _store(tensor: onnx.TensorProto, value: Array) -> None:
    """Write ``value`` (same shape and type) into ``tensor``: straight into ``raw_data`` when the
    tensor keeps its values there (one copy), else through ``numpy_helper.from_array``."""
    from onnx import numpy_helper

    if tensor.HasField("raw_data") and sys.byteorder == "little" and value.dtype.kind in "fiub":
        tensor.raw_data = np.ascontiguousarray(value).tobytes()
    else:
        tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))


def _value(
    entry: Mapping[str, object],
    weights: Mapping[str, Array],
    indices: Mapping[str, Array],
    old: _Like,
    scales: ScaleMemo,
) -> tuple[Array, int]:
    kind = entry.get("kind")
    if kind == "carried":
        value = np.asarray(weights[str(entry["source"])])
        via = entry.get("via")
        cast = value if via is None else value.astype(np.dtype(str(via)))
        return cast.astype(old.dtype, copy=False), 0
    if kind == "scale":
        return scales.get(entry).reshape(old.shape).astype(old.dtype), 0
    if kind == "requantized":
        dtype = np.dtype(str(entry["dtype"]))
        source = np.asarray(weights[str(entry["source"])])
        scale = np.asarray(entry["scale"], dtype=np.float64)
        zero = np.asarray(entry["zero_point"], dtype=np.float64)
        axis = int(entry["axis"])  # type: ignore[call-overload]
        if entry.get("scale_rule") is not None:
            scale = scales.get({**entry, "channels": scale.size}).astype(np.float64)
        elif isinstance(entry.get("scale_from"), dict):
            scale = scales.get(entry["scale_from"]).astype(np.float64)  # type: ignore[arg-type]
        return quantize_counting(source, scale, zero, axis, dtype)
    if kind == "gathered":
        sources = entry["sources"]
        assert isinstance(sources, list)
        local = indices[str(entry["index"])]
        return gather([weights[str(s)] for s in sources], local, old.shape), 0
    raise ValueError(f"unknown refit entry kind {kind!r}")


def serialized_in_pieces(model: onnx.ModelProto) -> list[bytes]:
    """``model``'s bytes as pieces whose concatenation parses as ``model``: the model without its
    initializers, then each initializer as a message ``ModelProto{graph{initializer}}``. Protobuf
    merges a message that occurs more than once and appends repeated fields, so the whole reads
    back as the same model (initializers last in the graph, where their order means nothing).
    Serializing a 17 MB engine in one piece takes 3-5 times as long. Empties ``model``'s
    initializers."""
    import onnx

    graph_tag = _tag(onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number)
    initializer_tag = _tag(onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number)
    pieces: list[bytes] = []
    for tensor in model.graph.initializer:
        data = tensor.SerializeToString()
        inner = initializer_tag + _varint(len(data))
        pieces += [graph_tag + _varint(len(inner) + len(data)) + inner, data]
    model.graph.ClearField("initializer")
    return [model.SerializeToString(), *pieces]


def _tag(field: int) -> bytes:
    return _varint(field << 3 | 2)  # wire type 2: length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _write_atomic(path: Path, *parts: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for data in parts:
                handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
