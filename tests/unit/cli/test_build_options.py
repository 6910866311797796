"""``kiln build``'s edge: option parsing into BuildOptions, exit codes, and how reports read."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from kiln.cli._report import accuracy_errors, accuracy_figure, human_bytes
from kiln.cli._shell import error_text, exit_code
from kiln.cli.build import BuildOptions, parse_profile
from kiln.compile.spec import CalibrationSpec
from kiln.errors import AccuracyError, BuildError, CacheBusy, ConfigError, ModelError
from kiln.types import ShapeProfile


def test_profiles_parse_from_the_command_line_form() -> None:
    assert parse_profile("dense:1x13,64x13,256x13") == ShapeProfile("dense", (1, 13), (64, 13), (256, 13))
    assert parse_profile("ns:input:1,2,3") == ShapeProfile("ns:input", (1,), (2,), (3,))


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("dense", "is not NAME:MIN,OPT,MAX"),
        ("dense:1x13,64x13", "is not NAME:MIN,OPT,MAX"),
        ("dense:1x13,ax13,2x13", "not a whole number"),
        ("dense:8x13,4x13,1x13", "min <= opt <= max"),
        ("dense:1x13,1x13,1", "same rank"),
    ],
)
def test_bad_profiles_say_what_is_expected(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_profile(text)


def test_options_become_the_build_spec() -> None:
    options = BuildOptions(
        model=Path("m.onnx"),
        precision="int8",
        calibration_method="entropy",
        calibration_samples=512,
        stratify_by="_key",
        profile=("x:1x3,4x3,8x3",),
        keep_fp32=("head",),
        keep_fp32_op_type=("Gather",),
        float_output_op_type=("MatMul",),
        per_channel=True,
        max_batch_size=8,
        task="ranker",
        max_accuracy_drop=0.01,
    )
    spec = options.spec()
    assert spec.calibration == CalibrationSpec(method="entropy", num_samples=512, stratify_by="_key")
    assert spec.per_channel
    assert spec.profiles == (ShapeProfile("x", (1, 3), (4, 3), (8, 3)),)
    assert (spec.keep_fp32_nodes, spec.keep_fp32_op_types) == (("head",), ("Gather",))
    assert spec.float_output_op_types == ("MatMul",)
    assert (spec.task, spec.max_accuracy_drop, spec.max_batch_size) == ("ranker", 0.01, 8)
    assert BuildOptions(model=Path("m.onnx")).spec().calibration is None  # fp32 has no calibration


def test_unknown_fields_and_values_out_of_bounds_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        BuildOptions(model=Path("m.onnx"), max_batch_size=0, precision="int4", turbo=True)  # type: ignore[arg-type,call-arg]
    text = error_text(caught.value)
    assert text.startswith("invalid options: 3 problem(s)")
    assert "--max-batch-size: Input should be greater than or equal to 1 (seen: 0)" in text
    assert "--precision:" in text
    assert "'int4'" in text
    assert "--turbo: Extra inputs are not permitted" in text


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("x"), 2),
        (ModelError("x"), 2),
        (AccuracyError("x"), 2),
        (BuildError("x"), 1),
        (CacheBusy("x"), 1),
        (RuntimeError("x"), 1),
    ],
)
def test_exit_codes(error: BaseException, code: int) -> None:
    assert exit_code(error) == code


def test_internal_errors_say_so() -> None:
    assert error_text(RuntimeError("boom")) == "internal error: RuntimeError: boom"


def test_accuracy_reads_per_task() -> None:
    ctr = {
        "task": "ctr",
        "auc_candidate": 0.8012,
        "auc_reference": 0.8044,
        "drop": 0.0032,
        "max_accuracy_drop": 0.005,
    }
    assert accuracy_figure(ctr) == "AUC 0.8012 (fp32 0.8044); drop 0.0032 <= bound 0.005"
    cnn = {"task": "classifier", "top1_agreement": 0.91, "drop": 0.09, "max_accuracy_drop": None}
    assert accuracy_figure(cnn) == "top-1 agreement 0.9100; drop 0.09"
    none = {"task": "none", "rel_l2_error": 0.0123, "drop": 0.0123, "max_abs_error": None, "num_samples": 8}
    assert accuracy_figure(none) == "relative L2 error 0.0123; drop 0.0123"
    assert accuracy_errors(none) == "max abs inf, rel L2 0.0123 on 8 validation samples"
    assert accuracy_figure(None).startswith("not measured")


def test_sizes_read_in_binary_units() -> None:
    assert [human_bytes(n) for n in (512, 2048, 5 * 1024**2, 3 * 1024**3)] == [
        "512 B",
        "2.0 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]
