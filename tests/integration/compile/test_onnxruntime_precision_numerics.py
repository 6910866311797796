"""The ONNX Runtime backend's int8 and fp16 engines, for real: built from the tiny example models,
loaded, run, and compared with the fp32 reference (ONNX Runtime, optimizations off)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from kiln.compile.accuracy import measure_accuracy, relative_l2
from kiln.compile.artifact import write_manifest
from kiln.compile.backends.base import BuildOutput, EngineArtifact
from kiln.compile.backends.onnxruntime import OnnxRuntimeBackend
from kiln.compile.data import SampleSet
from kiln.compile.reference import reference_outputs
from kiln.compile.spec import BuildSpec, CalibrationSpec
from kiln.examples import build_model, make_samples
from kiln.model.load import load_model
from kiln.model.source import ModelSource
from kiln.types import Array


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend()


def sample_set(name: str, count: int, kind: str) -> SampleSet:
    arrays = make_samples(name, count, kind=kind, size="tiny", labels=False)  # type: ignore[arg-type]
    keys = arrays.pop("_key", None)
    return SampleSet(inputs=arrays, keys=keys)


def source_of(name: str, tmp_path: Path) -> ModelSource:
    return load_model(build_model(name, tmp_path / f"{name}.onnx", size="tiny"))


def build(
    backend: OnnxRuntimeBackend, source: ModelSource, spec: BuildSpec, out: Path, **kwargs: object
) -> tuple[EngineArtifact, BuildOutput]:
    output = backend.build(source, spec, out, **kwargs)  # type: ignore[arg-type]
    artifact = write_manifest(
        out, key="test", source=source, spec=spec, target=backend.target(), output=output, build_seconds=0.0
    )
    return artifact, output


def run(backend: OnnxRuntimeBackend, artifact: EngineArtifact, samples: SampleSet) -> Array:
    engine = backend.load(artifact)
    instance = engine.create_instance()
    try:
        parts = [next(iter(instance.run(batch).values())) for batch in samples.batches(16)]
    finally:
        instance.close()
        engine.close()
    return np.concatenate(parts)


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_int8_engine_tracks_the_fp32_reference_and_reuses_its_table(
    backend: OnnxRuntimeBackend, tmp_path: Path
) -> None:
    source = source_of("cnn", tmp_path)
    assert source.model is not None
    calibration, validation = sample_set("cnn", 64, "calibration"), sample_set("cnn", 128, "validation")
    spec = BuildSpec(precision="int8", calibration=CalibrationSpec(num_samples=64), per_channel=True)

    artifact, output = build(backend, source, spec, tmp_path / "int8", calibration=calibration)

    assert output.build_path == "build"
    assert output.calibration_file == "calibration.json"
    assert {"QLinearConv", "QuantizeLinear"} & op_types(artifact.engine_path)
    reference = reference_outputs(source.model, validation, batch_size=16)["logits"]
    candidate = run(backend, artifact, validation)
    report = measure_accuracy(reference, candidate, task="classifier")
    assert 0.0 < report.rel_l2_error < 0.5  # quantized: not exact, yet close
    assert report.top1_agreement is not None
    assert report.top1_agreement >= 0.6

    reused, again = build(
        backend, source, spec, tmp_path / "reuse", calibration_cache=artifact.path / "calibration.json"
    )

    assert again.build_path == "calibration-reuse"
    np.testing.assert_array_equal(run(backend, reused, validation), candidate)  # same ranges, same engine


def test_fp16_engine_is_close_to_the_fp32_reference(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    source = source_of("ranker", tmp_path)
    assert source.model is not None
    validation = sample_set("ranker", 64, "validation")

    artifact, output = build(backend, source, BuildSpec(precision="fp16"), tmp_path / "fp16")

    assert output.calibration_file is None
    engine_model = onnx.load(str(artifact.engine_path))
    types = {t.data_type for t in engine_model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types
    reference = reference_outputs(source.model, validation, batch_size=16)["score"]
    candidate = run(backend, artifact, validation)
    assert candidate.dtype == np.float32  # inputs and outputs stay fp32
    assert 0.0 < relative_l2(reference, candidate) < 0.02


def test_fp32_engine_matches_the_reference_closely(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    source = source_of("ctr", tmp_path)
    assert source.model is not None
    validation = sample_set("ctr", 256, "validation")

    artifact, _ = build(backend, source, BuildSpec(), tmp_path / "fp32")

    reference = reference_outputs(source.model, validation, batch_size=64)["prob"]
    np.testing.assert_allclose(run(backend, artifact, validation), reference, rtol=1e-4, atol=1e-6)
