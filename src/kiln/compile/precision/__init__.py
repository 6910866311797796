"""Precision passes: ONNX -> ONNX, backend-neutral.

``fp32`` leaves the model alone; ``fp16``/``bf16`` convert floats keeping I/O fp32; ``int8`` inserts
QDQ nodes from calibrated activation ranges. The result runs on ONNX Runtime and is what a
strongly typed TensorRT build consumes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    import onnx

    from kiln.compile.backends.base import Progress
    from kiln.compile.data import SampleSet
    from kiln.compile.spec import BuildSpec

CalibrationTable: TypeAlias = Mapping[str, tuple[float, float]]
"""Activation tensor name -> (low, high) range chosen by calibration."""

PrecisionPath: TypeAlias = Literal["none", "fp16", "bf16", "calibrated", "calibration-reuse"]


@dataclass(frozen=True)
class PrecisionResult:
    """The converted model, the INT8 ranges it was built from (``None`` unless int8), how it was
    made, and the wall seconds the pass took."""

    model: onnx.ModelProto
    calibration_table: CalibrationTable | None
    path: PrecisionPath
    seconds: float


def apply_precision(
    model: onnx.ModelProto,
    spec: BuildSpec,
    *,
    calibration: SampleSet | None = None,
    calibration_table: CalibrationTable | None = None,
    progress: Progress | None = None,
    workdir: Path | None = None,
) -> PrecisionResult:
    """Convert ``model`` (not modified) to ``spec.precision``.

    For ``int8``: with ``calibration_table`` given, reuse those ranges (no calibration run: the
    weight-only update path); otherwise calibrate on ``calibration`` by ``spec.calibration.method``.
    ``progress("calibrating", done, total)`` is called after every calibration batch. Temporary
    files go to a folder inside ``workdir`` (or the system's) that is removed before returning.

    Raises ``ConfigError`` for what the caller must fix: no calibration data and no table for
    int8, samples that do not fit the model (names, datatypes, shapes), a table calibrated for
    another structure, a ``keep_fp32_nodes`` name not in the graph. Raises ``BuildError`` when the
    converted model does not load in ONNX Runtime (naming the node to keep in fp32), and for bf16
    where this ONNX Runtime has no bf16 kernels (CPU) and the backend is ``onnxruntime``.
    """
    from kiln.compile.precision._graph import check_keep_fp32, copy_model
    from kiln.compile.precision.fp16 import convert_16bit
    from kiln.compile.precision.int8 import quantize_int8

    start = time.perf_counter()
    check_keep_fp32(model, spec)
    if spec.precision == "fp32":
        return PrecisionResult(copy_model(model), None, "none", time.perf_counter() - start)
    if spec.precision in ("fp16", "bf16"):
        converted = convert_16bit(model, spec, spec.precision)
        return PrecisionResult(converted, None, spec.precision, time.perf_counter() - start)
    result = quantize_int8(
        model, spec, calibration=calibration, table=calibration_table, progress=progress, workdir=workdir
    )
    path: PrecisionPath = "calibration-reuse" if result.reused else "calibrated"
    return PrecisionResult(result.model, result.ranges, path, time.perf_counter() - start)


def save_calibration_table(table: CalibrationTable, path: Path, *, method: str) -> None:
    """Write ``table`` as kiln's calibration JSON (atomically): ranges, ``method`` and a format
    version. Ranges are stored as float32 values, exactly."""
    from kiln.compile.precision.table import save_table

    save_table(table, path, method=method)


def load_calibration_table(path: Path) -> CalibrationTable:
    """Read a table written by :func:`save_calibration_table`. ``ConfigError`` naming the file
    when it is missing, not JSON, of another format version, or holds a malformed range."""
    from kiln.compile.precision.table import read_table

    return read_table(path).ranges
