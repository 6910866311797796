"""``kiln build MODEL.onnx``: build (or fetch from the cache) one engine and report how.

The options are parsed into :class:`BuildOptions` (pydantic, ``extra="forbid"``, bounded, units
in names; its field descriptions are the ``--help`` text), turned into a
:class:`kiln.cache.pipeline.BuildRequest`, and handed to :func:`kiln.cache.pipeline.build_engine`.
Exit codes: 0 ok, 2 bad input (options, model file, samples, an accuracy bound missed), 1 anything
else (a failed build, a busy cache).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.table import Table

from kiln.cache.builder import BuildReport
from kiln.cache.pipeline import BuildRequest, build_engine
from kiln.cli._report import report_json, summary_rows, wide_console
from kiln.cli._shell import progress_bar, run_guarded
from kiln.compile.backends.base import Progress
from kiln.compile.registry import BackendName
from kiln.compile.spec import BuildSpec, CalibrationMethod, CalibrationSpec, Task
from kiln.types import ShapeProfile

CliPrecision = Literal["fp32", "fp16", "int8"]


def parse_profile(text: str) -> ShapeProfile:
    """``NAME:MIN,OPT,MAX`` with shapes written ``1x13`` into a ShapeProfile (``ValueError`` naming
    the text and the expected form otherwise)."""
    name, sep, shapes = text.rpartition(":")
    parts = shapes.split(",")
    form = "NAME:MIN,OPT,MAX with shapes like 1x13, e.g. dense:1x13,64x13,256x13"
    if not sep or not name or len(parts) != 3:
        raise ValueError(f"profile {text!r} is not {form}")
    try:
        dims = [tuple(int(d) for d in part.strip().lower().split("x")) for part in parts]
    except ValueError:
        raise ValueError(
            f"profile {text!r} has a dimension that is not a whole number; write {form}"
        ) from None
    return ShapeProfile(name, *dims)


class BuildOptions(BaseModel):
    """``kiln build`` options as checked at the edge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path = Field(description="The ONNX model file.")
    precision: CliPrecision = Field(
        "fp32", description="fp32 (as is), fp16 (float16 inside, fp32 I/O) or int8 (QDQ from calibration)."
    )
    calibration: Path | None = Field(
        None,
        description="Calibration samples: a folder of .npz files (or one), one array per model input "
        "named after it, samples on axis 0. Required for int8.",
    )
    calibration_method: CalibrationMethod = Field(
        "minmax",
        description="How int8 activation ranges are chosen: minmax (observed extremes), entropy "
        "(KL-divergence search) or percentile (clip at --percentile).",
    )
    calibration_samples: int = Field(
        256, ge=1, le=1_000_000, description="Calibration samples used, at most."
    )
    percentile: float = Field(
        99.999, gt=50.0, le=100.0, description="Clip point of --calibration-method percentile."
    )
    stratify_by: str | None = Field(
        None, description="Draw calibration samples evenly across the values of this array (e.g. _key)."
    )
    profile: tuple[str, ...] = Field(
        (),
        description="Shapes one input may take: NAME:MIN,OPT,MAX, e.g. dense:1x13,64x13,256x13. Repeatable.",
    )
    keep_fp32: tuple[str, ...] = Field((), description="Node left in fp32 (mixed precision); repeatable.")
    keep_fp32_op_type: tuple[str, ...] = Field(
        (), description="Op type left in fp32 (e.g. Gather); repeatable."
    )
    float_output_op_type: tuple[str, ...] = Field(
        (),
        description="int8 op type whose results go on as floats, not requantized (e.g. MatMul: "
        "integer product, float result, bias fused); repeatable.",
    )
    per_channel: bool = Field(False, description="Quantize int8 weights per output channel.")
    max_batch_size: int = Field(32, ge=1, le=1 << 20, description="Largest batch the engine serves.")
    validation: Path | None = Field(
        None,
        description="Samples the engine is checked on against the fp32 model (same format as "
        "--calibration). Default: the calibration samples.",
    )
    max_check_samples: int = Field(
        10_000, ge=1, le=10_000_000, description="Validation samples run per accuracy check, at most."
    )
    task: Task = Field(
        "none",
        description="What the output means, for the accuracy figure: classifier (top-1 agreement), ctr "
        "(AUC, needs _label), ranker (Spearman) or none (relative L2 error).",
    )
    max_accuracy_drop: float | None = Field(
        None,
        ge=0.0,
        le=1e6,
        description="Fail (and cache nothing) when accuracy drops more: 1 - top-1 agreement, AUC loss, "
        "1 - Spearman, or relative L2 error.",
    )
    backend: BackendName = Field("onnxruntime", description="Backend that builds the engine.")
    cache_dir: Path | None = Field(
        None, description="Engine cache folder. Default: $KILN_CACHE_DIR, else ~/.cache/kiln/engines."
    )
    wait_s: float | None = Field(
        None,
        ge=0.0,
        le=86_400.0,
        description="Longest wait for another build of the same engine (default: no limit).",
    )

    @field_validator("profile")
    @classmethod
    def _profiles_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            parse_profile(text)
        return value

    def spec(self) -> BuildSpec:
        calibration = CalibrationSpec(
            method=self.calibration_method,
            num_samples=self.calibration_samples,
            percentile=self.percentile,
            stratify_by=self.stratify_by,
        )
        return BuildSpec(
            precision=self.precision,
            calibration=calibration if self.precision == "int8" else None,
            per_channel=self.per_channel,
            keep_fp32_nodes=self.keep_fp32,
            keep_fp32_op_types=self.keep_fp32_op_type,
            float_output_op_types=self.float_output_op_type,
            profiles=tuple(parse_profile(p) for p in self.profile),
            max_batch_size=self.max_batch_size,
            backend=self.backend,
            task=self.task,
            max_accuracy_drop=self.max_accuracy_drop,
        )

    def request(self, progress: Progress | None = None) -> BuildRequest:
        return BuildRequest(
            model=self.model,
            spec=self.spec(),
            calibration=self.calibration,
            validation=self.validation,
            cache=self.cache_dir,
            progress=progress,
            max_check_samples=self.max_check_samples,
            lock_timeout_s=self.wait_s,
        )


def _help(name: str) -> str:
    return str(BuildOptions.model_fields[name].description)


def _many(values: list[str] | None) -> tuple[str, ...]:
    """Repeated options, each also taking comma-separated values."""
    return tuple(v.strip() for value in values or () for v in value.split(",") if v.strip())


def build_command(
    model: Annotated[Path, typer.Argument(help=_help("model"), show_default=False)],
    *,
    precision: Annotated[CliPrecision, typer.Option(help=_help("precision"))] = "fp32",
    calibration: Annotated[Path | None, typer.Option(help=_help("calibration"), show_default=False)] = None,
    calibration_method: Annotated[
        CalibrationMethod, typer.Option(help=_help("calibration_method"))
    ] = "minmax",
    calibration_samples: Annotated[int, typer.Option(help=_help("calibration_samples"))] = 256,
    percentile: Annotated[float, typer.Option(help=_help("percentile"))] = 99.999,
    stratify_by: Annotated[str | None, typer.Option(help=_help("stratify_by"), show_default=False)] = None,
    profile: Annotated[list[str] | None, typer.Option(help=_help("profile"), show_default=False)] = None,
    keep_fp32: Annotated[list[str] | None, typer.Option(help=_help("keep_fp32"), show_default=False)] = None,
    keep_fp32_op_type: Annotated[
        list[str] | None, typer.Option(help=_help("keep_fp32_op_type"), show_default=False)
    ] = None,
    float_output_op_type: Annotated[
        list[str] | None, typer.Option(help=_help("float_output_op_type"), show_default=False)
    ] = None,
    per_channel: Annotated[bool, typer.Option("--per-channel", help=_help("per_channel"))] = False,
    max_batch_size: Annotated[int, typer.Option(help=_help("max_batch_size"))] = 32,
    validation: Annotated[Path | None, typer.Option(help=_help("validation"), show_default=False)] = None,
    max_check_samples: Annotated[int, typer.Option(help=_help("max_check_samples"))] = 10_000,
    task: Annotated[Task, typer.Option(help=_help("task"))] = "none",
    max_accuracy_drop: Annotated[
        float | None, typer.Option(help=_help("max_accuracy_drop"), show_default=False)
    ] = None,
    backend: Annotated[BackendName, typer.Option(help=_help("backend"))] = "onnxruntime",
    cache_dir: Annotated[Path | None, typer.Option(help=_help("cache_dir"), show_default=False)] = None,
    wait_s: Annotated[float | None, typer.Option(help=_help("wait_s"), show_default=False)] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for machines instead of a table.")
    ] = False,
) -> None:
    """Build an engine from an ONNX model, or take it from the cache, and report how."""
    given = dict(locals())
    given.pop("as_json")
    given["profile"] = tuple(given["profile"] or ())
    for name in ("keep_fp32", "keep_fp32_op_type", "float_output_op_type"):
        given[name] = _many(given[name])
    options = run_guarded(lambda: BuildOptions(**given), as_json=as_json)
    with progress_bar(enabled=not as_json) as progress:
        report = run_guarded(lambda: build_engine(options.request(progress)), as_json=as_json)
    if as_json:
        typer.echo(json.dumps(report_json(report), indent=2))
    else:
        print_report(report)


def print_report(report: BuildReport) -> None:
    table = Table(title="kiln build", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field, value in summary_rows(report):
        table.add_row(field, value)
    wide_console().print(table)
