"""INT8: QDQ static quantization from activation ranges that kiln computes itself.

Steps: pre-process (ONNX Runtime's ``quant_pre_process``: shape inference and basic fusions such
as MatMul+Add -> Gemm, which lowers the quantization error), pick the activation tensors the QDQ
quantizer needs, get their ranges (calibration on samples, or a stored table), and let
``quantize_static`` insert the QDQ nodes from exactly those ranges. The ranges reach it through
its calibration cache file, labelled MinMax so that it uses them as given.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from kiln.compile.backends.base import Progress
from kiln.compile.data import SampleSet, check_samples, select_samples
from kiln.compile.precision._graph import copy_model, input_specs, name_unnamed_nodes, verify_loads
from kiln.compile.precision.calibration import compute_range
from kiln.compile.precision.collect import collect_histograms, quantizable_op_types, tensors_to_calibrate
from kiln.compile.precision.table import as_float32_range
from kiln.compile.spec import BuildSpec, CalibrationSpec
from kiln.errors import BuildError, ConfigError, describe

log = logging.getLogger(__name__)

Ranges = dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Int8Result:
    model: onnx.ModelProto
    ranges: Ranges
    reused: bool


def quantize_int8(
    model: onnx.ModelProto,
    spec: BuildSpec,
    *,
    calibration: SampleSet | None,
    table: Mapping[str, tuple[float, float]] | None,
    progress: Progress | None,
    workdir: Path | None,
) -> Int8Result:
    """QDQ-quantize ``model`` (not modified). With ``table``, its ranges are used and no sample
    is run; otherwise ``calibration`` is calibrated by ``spec.calibration``."""
    if table is None:
        if calibration is None:
            raise ConfigError(
                describe(
                    "int8 needs calibration data and none was given",
                    fix="pass --calibration DIR (a folder of .npz samples, one array per model input)",
                )
            )
        check_samples(calibration, input_specs(model), what="calibration")
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    source = copy_model(model)
    name_unnamed_nodes(source)
    with tempfile.TemporaryDirectory(prefix="kiln-int8-", dir=workdir) as tmp:
        prepared_path = None if table is None else prepared_for_table(source, table, Path(tmp))
        prepared_path = prepared_path or prepare(source, Path(tmp))
        prepared = onnx.load(str(prepared_path))
        tensors = tensors_to_calibrate(prepared, quantizable_op_types())
        if table is not None:
            ranges = ranges_from_table(table, tensors)
        else:
            assert calibration is not None
            ranges = calibrate(prepared, tensors, calibration, spec, progress)
        excluded = excluded_nodes(source, prepared, spec)
        quantized = _quantize(prepared_path, Path(tmp), ranges, excluded, spec)
    if table is None:  # with a stored table: the structure that table was made for loaded then
        _require_kernels(quantized, spec)
    return Int8Result(quantized, ranges, reused=table is not None)


def calibrate(
    prepared: onnx.ModelProto,
    tensors: dict[str, int],
    calibration: SampleSet,
    spec: BuildSpec,
    progress: Progress | None,
) -> Ranges:
    """Ranges for ``tensors`` from running the selected calibration samples through ``prepared``."""
    if not tensors:
        return {}  # nothing in this graph is quantizable; the model comes back unchanged
    cal = spec.calibration or CalibrationSpec()
    samples = select_samples(
        calibration, cal.num_samples, stratify=cal.stratify_by is not None, seed=cal.seed
    )
    histograms = collect_histograms(
        prepared,
        tensors,
        samples,
        specs=input_specs(prepared),
        max_batch_size=spec.max_batch_size,
        num_bins=cal.num_bins,
        histogram=cal.method != "minmax",
        progress=progress,
    )
    return {name: as_float32_range(*compute_range(h, cal)) for name, h in histograms.items()}


def _require_kernels(quantized: onnx.ModelProto, spec: BuildSpec) -> None:
    missing_kernel = verify_loads(quantized, what="int8")
    if missing_kernel is not None and spec.backend == "onnxruntime":
        raise BuildError(
            describe(
                "ONNX Runtime here has no kernel for a node of the int8 model",
                seen=missing_kernel[-300:],
                fix="keep that node in fp32 with --keep-fp32 NODE, or build with --precision fp16",
            )
        )


def prepare(source: onnx.ModelProto, tmp: Path) -> Path:
    """Write the pre-processed ``source`` into ``tmp`` and return its path. Falls back to the model
    with plain ONNX shape inference when ``quant_pre_process`` fails (logged)."""
    from onnxruntime.quantization import quant_pre_process

    source_path, prepared_path = tmp / "source.onnx", tmp / "prepared.onnx"
    onnx.save(source, str(source_path))
    try:
        quant_pre_process(str(source_path), str(prepared_path))
        prepared = onnx.load(str(prepared_path))
    except Exception as exc:  # the pre-processor raises whatever its passes raise
        log.warning("quantization pre-processing failed (%s); quantizing without it", exc)
        prepared = onnx.shape_inference.infer_shapes(source)
    name_unnamed_nodes(prepared)
    onnx.save(prepared, str(prepared_path))
    return prepared_path


def prepared_for_table(
    source: onnx.ModelProto, table: Mapping[str, tuple[float, float]], tmp: Path
) -> Path | None:
    """For a build from a stored table: ``source`` with plain ONNX shape inference written into
    ``tmp``, when its activation tensors to quantize are exactly the table's, that is when
    pre-processing changed none of them as the table was made (no fusion in this structure: the
    pre-processor's work would be shape inference alone). ``None`` otherwise: pre-process then."""
    inferred = onnx.shape_inference.infer_shapes(source)
    if set(tensors_to_calibrate(inferred, quantizable_op_types())) != set(table):
        return None
    # The mark quant_pre_process leaves, so that quantize_static does not ask for it: the table
    # shows it would have changed nothing that quantization sees.
    onnx.helper.set_model_props(inferred, {**_props(inferred), "onnx.quant.pre_process": "onnxruntime.quant"})
    path = tmp / "prepared.onnx"
    onnx.save(inferred, str(path))
    return path


def _props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def ranges_from_table(table: Mapping[str, tuple[float, float]], tensors: Mapping[str, int]) -> Ranges:
    """The table's ranges for ``tensors``. ``ConfigError`` when the table lacks some of them (it was
    calibrated for another model structure)."""
    missing = [name for name in tensors if name not in table]
    if missing:
        raise ConfigError(
            describe(
                f"the calibration table does not fit this model: {len(missing)} of {len(tensors)} "
                "activation tensors have no range",
                seen=missing[:5],
                fix="calibrate again (the table belongs to a model of another structure)",
            )
        )
    return {name: as_float32_range(*table[name]) for name in tensors}


def excluded_nodes(original: onnx.ModelProto, prepared: onnx.ModelProto, spec: BuildSpec) -> list[str]:
    """The pre-processed graph's nodes standing for the kept-in-fp32 nodes and op types of the
    original graph. A node fused by pre-processing is found through the fused node's name (it
    keeps the first node's name as a prefix) or through the tensors it produces. Both graphs
    must have every node named (:func:`name_unnamed_nodes`)."""
    kept = set(spec.keep_fp32_nodes)
    kept |= {n.name for n in original.graph.node if n.op_type in spec.keep_fp32_op_types}
    if not kept:
        return []
    producer = {out: n.name for n in prepared.graph.node for out in n.output}
    prepared_names = [n.name for n in prepared.graph.node]
    by_name = {n.name: n for n in original.graph.node}
    found = {n.name for n in prepared.graph.node if n.op_type in spec.keep_fp32_op_types}
    for name in sorted(kept):
        found |= {p for p in prepared_names if p == name or p.startswith(name + "/")}
        found |= {producer[o] for o in by_name[name].output if o in producer}
    return sorted(found)


def _extra_options(spec: BuildSpec) -> dict[str, object]:
    if not spec.float_output_op_types:
        return {}
    return {"OpTypesToExcludeOutputQuantization": sorted(spec.float_output_op_types)}


def _quantize(
    prepared_path: Path, tmp: Path, ranges: Ranges, excluded: list[str], spec: BuildSpec
) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        TensorData,
        TensorsData,
        quantize_static,
        save_tensors_data,
    )

    cache, output = tmp / "ranges.json", tmp / "quantized.onnx"
    data = {n: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for n, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), cache)
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    try:
        quantize_static(
            str(prepared_path),
            str(output),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=spec.per_channel,
            activation_type=types[spec.activation_type],
            weight_type=types[spec.weight_type],
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
            extra_options=_extra_options(spec),
        )
    except Exception as exc:  # onnxruntime.quantization raises plain ValueError/RuntimeError/...
        raise BuildError(
            describe(
                "int8 quantization failed",
                seen=f"{type(exc).__name__}: {str(exc)[-300:]}",
                fix="keep the failing node in fp32 with --keep-fp32 NODE, or use --precision fp16",
            )
        ) from None
    return onnx.load(str(output))
