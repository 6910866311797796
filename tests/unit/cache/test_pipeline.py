"""The pure parts of build_engine: profiles against the model, check batches, request bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.cache.pipeline import BuildRequest, check_profiles
from kiln.cache.verify import check_batch_size
from kiln.compile.spec import BuildSpec
from kiln.errors import ConfigError
from kiln.types import ShapeProfile, TensorSpec

INPUTS = (TensorSpec("dense", "FP32", (-1, 13)), TensorSpec("ids", "INT64", (-1, 26)))


def spec(*profiles: ShapeProfile, max_batch_size: int = 64) -> BuildSpec:
    return BuildSpec(profiles=profiles, max_batch_size=max_batch_size)


def test_profiles_that_fit_pass() -> None:
    check_profiles(spec(ShapeProfile("dense", (1, 13), (8, 13), (64, 13))), INPUTS)
    check_profiles(spec(), INPUTS)


def test_every_misfit_is_named_with_a_profile_that_would_fit() -> None:
    profiles = (
        ShapeProfile("dense", (1, 12), (8, 12), (32, 12)),
        ShapeProfile("ids", (1,), (8,), (128,)),
        ShapeProfile("image", (1, 3), (1, 3), (1, 3)),
    )
    with pytest.raises(ConfigError) as caught:
        check_profiles(spec(*profiles), INPUTS)
    text = str(caught.value)
    assert "profile for 'dense' allows 12..12 on axis 1, which the model fixes at 13" in text
    assert "profile for 'ids' has rank 1, the input [-1, 26]" in text
    assert "profile for unknown input 'image' (the inputs are ['dense', 'ids'])" in text
    assert "dense:1x13,8x13,32x13, ids:1x26,8x26,32x26" in text


def test_a_profile_batch_above_the_engine_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="allows batch 128, above max_batch_size 64"):
        check_profiles(spec(ShapeProfile("dense", (1, 13), (8, 13), (128, 13))), INPUTS)


def test_a_fixed_batch_dim_is_checked_like_any_fixed_dim() -> None:
    fixed = (TensorSpec("x", "FP32", (4, 3)),)
    check_profiles(spec(ShapeProfile("x", (4, 3), (4, 3), (4, 3))), fixed)
    with pytest.raises(ConfigError, match="which the model fixes at 4"):
        check_profiles(spec(ShapeProfile("x", (1, 3), (4, 3), (4, 3))), fixed)


@pytest.mark.parametrize(
    ("max_batch_size", "profile_max", "expected"), [(64, None, 32), (8, None, 8), (64, 16, 16), (4, 16, 4)]
)
def test_check_batches_stay_within_every_limit(
    max_batch_size: int, profile_max: int | None, expected: int
) -> None:
    profiles = () if profile_max is None else (ShapeProfile("x", (1, 3), (1, 3), (profile_max, 3)),)
    assert check_batch_size(max_batch_size, profiles) == expected


def test_a_request_needs_at_least_one_check_sample() -> None:
    with pytest.raises(ConfigError, match="max_check_samples must be >= 1"):
        BuildRequest(Path("m.onnx"), max_check_samples=0)


class RecordingBackend:
    name = "recording"

    def __init__(self) -> None:
        self.calibrations: list[object] = []

    def target(self) -> object:
        return "target"

    def build(self, source: object, spec: BuildSpec, out_dir: Path, **kwargs: object) -> str:
        self.calibrations.append(kwargs["calibration"])
        return "built"


def test_the_backend_gets_calibration_samples_only_when_it_calibrates(tmp_path: Path) -> None:
    import numpy as np

    from kiln.cache.build_samples import BuildSamples
    from kiln.cache.pipeline import CalibrationOnDemand
    from kiln.compile.data import SampleSet
    from kiln.compile.spec import CalibrationSpec

    spec = BuildSpec(precision="int8", calibration=CalibrationSpec(num_samples=10))
    inputs = (TensorSpec("x", "FP32", (-1, 3)),)
    samples = BuildSamples(
        spec,
        inputs,
        calibration=SampleSet({"x": np.zeros((50, 3), np.float32)}),
        validation=None,
        max_check_samples=8,
    )
    backend = RecordingBackend()
    told: list[bool] = []
    wrapped = CalibrationOnDemand(backend, samples, lambda *, update: told.append(update))  # type: ignore[arg-type]

    wrapped.build(None, spec, tmp_path, calibration_cache=tmp_path / "calibration.json")  # type: ignore[arg-type]
    wrapped.build(None, spec, tmp_path)  # type: ignore[arg-type]
    wrapped.build(None, BuildSpec(precision="fp16"), tmp_path)  # type: ignore[arg-type]

    reused, calibrated, fp16 = backend.calibrations
    assert told == [True, False, False]  # the reference starts with each build; prefix only on reuse
    assert reused is None
    assert fp16 is None
    assert isinstance(calibrated, SampleSet)
    assert len(calibrated) == 10
    check = samples.check_samples()
    assert check is not None
    assert check.samples_from == "calibration"
    assert len(check.load()) == 8  # capped at max_check_samples


def test_int8_without_calibration_is_refused_up_front() -> None:
    from kiln.cache.build_samples import BuildSamples

    with pytest.raises(ConfigError, match="int8 needs calibration data"):
        BuildSamples(
            BuildSpec(precision="int8"), INPUTS, calibration=None, validation=None, max_check_samples=8
        )


def test_a_refit_starts_the_reference_as_a_weight_only_update(tmp_path: Path) -> None:
    from kiln.cache.pipeline import CalibrationOnDemand

    class Refits:
        name = "fake"

        def refit(self, artifact: object, source: object, out_dir: Path) -> str:
            return "refitted"

    told: list[bool] = []
    wrapped = CalibrationOnDemand(Refits(), None, lambda *, update: told.append(update))  # type: ignore[arg-type]
    assert wrapped.refit(None, None, tmp_path) == "refitted"  # type: ignore[arg-type,comparison-overlap]
    assert told == [True]
