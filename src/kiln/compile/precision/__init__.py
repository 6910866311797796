"""Precision passes: ONNX -> ONNX, backend-neutral. (Contract; implementation pending.)

``fp32`` leaves the model alone; ``fp16``/``bf16`` convert floats keeping I/O fp32; ``int8`` inserts
QDQ nodes from calibrated activation ranges. The result runs on ONNX Runtime and is what a
strongly typed TensorRT build consumes.
"""

from __future__ import annotations

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
    Raises ``BuildError``/``ConfigError`` naming what to fix (no calibration data for int8, ...).
    """
    raise NotImplementedError


def save_calibration_table(table: CalibrationTable, path: Path, *, method: str) -> None:
    raise NotImplementedError


def load_calibration_table(path: Path) -> CalibrationTable:
    raise NotImplementedError
