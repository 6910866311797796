"""How the backend drives the precision passes: a fake pass stands in for the real one (the int8
numerics are tested with the passes); what is tested here is our wiring around it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from ort_models import mlp, mlp_inputs, reference, source_of

from kiln.compile import precision
from kiln.compile.artifact import write_manifest
from kiln.compile.backends.onnxruntime import OnnxRuntimeBackend
from kiln.compile.data import SampleSet
from kiln.compile.precision import PrecisionResult
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError

TABLE = {"h": (-1.0, 2.0), "z": (-3.0, 3.0)}


class FakePasses:
    """Doubles the first layer's weights (so the engine visibly runs the pass's model) and, for
    int8, returns TABLE or the table it was given."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    def apply_precision(self, model: onnx.ModelProto, spec: BuildSpec, **kwargs: object) -> PrecisionResult:
        self.calls.append({"spec": spec, **kwargs})
        changed = onnx.ModelProto()
        changed.CopyFrom(model)
        w1 = changed.graph.initializer[0]
        w1.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w1) * 2, w1.name))
        given = kwargs.get("calibration_table")
        if spec.precision != "int8":
            return PrecisionResult(changed, None, "fp16", 0.01)
        table = given if given is not None else TABLE
        return PrecisionResult(changed, table, "calibration-reuse" if given else "calibrated", 0.02)

    @staticmethod
    def save_calibration_table(table: Mapping[str, tuple[float, float]], path: Path, *, method: str) -> None:
        path.write_text(json.dumps({"method": method, "ranges": {k: list(v) for k, v in table.items()}}))

    @staticmethod
    def load_calibration_table(path: Path) -> dict[str, tuple[float, float]]:
        ranges = json.loads(path.read_text())["ranges"]
        return {k: (float(lo), float(hi)) for k, (lo, hi) in ranges.items()}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePasses:
    passes = FakePasses()
    monkeypatch.setattr(precision, "apply_precision", passes.apply_precision)
    monkeypatch.setattr(precision, "save_calibration_table", passes.save_calibration_table)
    monkeypatch.setattr(precision, "load_calibration_table", passes.load_calibration_table)
    return passes


def doubled(model: onnx.ModelProto) -> onnx.ModelProto:
    return FakePasses().apply_precision(model, BuildSpec(precision="fp16")).model


def test_int8_build_stores_the_table_and_runs_the_pass_model(fake: FakePasses, tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend()
    source = source_of(mlp())
    samples = SampleSet(inputs=mlp_inputs(4))
    spec = BuildSpec(precision="int8")
    output = backend.build(source, spec, tmp_path / "a", calibration=samples)
    assert fake.calls[0]["calibration"] is samples
    assert fake.calls[0]["calibration_table"] is None
    assert output.build_path == "build"
    assert output.calibration_file == "calibration.json"
    assert set(output.files) == {"engine.onnx", "calibration.json"}
    assert output.extra["precision_path"] == "calibrated"
    saved = json.loads((tmp_path / "a" / "calibration.json").read_text())
    assert saved["method"] == "minmax"
    artifact = write_manifest(
        tmp_path / "a",
        key="k",
        source=source,
        spec=spec,
        target=backend.target(),
        output=output,
        build_seconds=0,
    )
    assert artifact.manifest.calibration_file == "calibration.json"
    feeds = mlp_inputs(3)
    got = backend.load(artifact).create_instance().run(feeds)["y"]
    np.testing.assert_allclose(got, reference(doubled(mlp()), feeds)[0], rtol=0, atol=1e-5)
    assert not np.allclose(got, reference(mlp(), feeds)[0], atol=1e-3)


def test_stored_table_is_reused(fake: FakePasses, tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend()
    spec = BuildSpec(precision="int8")
    backend.build(source_of(mlp()), spec, tmp_path / "first", calibration=SampleSet(inputs=mlp_inputs(4)))
    retrained = source_of(mlp(scale=0.5))
    output = backend.build(
        retrained, spec, tmp_path / "second", calibration_cache=tmp_path / "first" / "calibration.json"
    )
    assert fake.calls[1]["calibration_table"] == TABLE
    assert fake.calls[1]["calibration"] is None
    assert output.build_path == "calibration-reuse"
    assert output.calibration_file == "calibration.json"
    assert (tmp_path / "second" / "calibration.json").is_file()  # carried on for the next retrain


def test_fp16_has_no_table_and_fp32_skips_the_pass(fake: FakePasses, tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend()
    output = backend.build(source_of(mlp()), BuildSpec(precision="fp16"), tmp_path / "fp16")
    assert output.calibration_file is None
    assert output.files == ("engine.onnx",)
    assert output.extra["precision_path"] == "fp16"
    backend.build(source_of(mlp()), BuildSpec(), tmp_path / "fp32")
    assert len(fake.calls) == 1


def test_failed_pass_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(*args: object, **kwargs: object) -> PrecisionResult:
        raise BuildError("no calibration data for int8; pass --calibration")

    monkeypatch.setattr(precision, "apply_precision", broken)
    with pytest.raises(BuildError, match="no calibration data"):
        OnnxRuntimeBackend().build(source_of(mlp()), BuildSpec(precision="int8"), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_pass_not_yet_available_is_a_build_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def pending(*args: object, **kwargs: object) -> PrecisionResult:
        raise NotImplementedError

    monkeypatch.setattr(precision, "apply_precision", pending)
    with pytest.raises(BuildError, match=r"precision 'fp16' is not available.*build fp32"):
        OnnxRuntimeBackend().build(source_of(mlp()), BuildSpec(precision="fp16"), tmp_path / "out")


def test_calibration_must_be_a_sample_set(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="must be a SampleSet"):
        OnnxRuntimeBackend().build(
            source_of(mlp()), BuildSpec(precision="int8"), tmp_path, calibration=[1, 2, 3]
        )
