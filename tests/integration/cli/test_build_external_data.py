"""``kiln build`` of the tiny examples saved with every tensor as external data
(``onnx.save_model(..., save_as_external_data=True, size_threshold=0)``): the build succeeds, the
engine is keyed by the same fingerprint and answers exactly like the engine of the inline model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from build_helpers import Example, kiln

from kiln.compile.backends.base import EngineArtifact
from kiln.compile.data import load_samples
from kiln.compile.registry import create_backend
from kiln.model.walk import is_external
from kiln.types import Array


def save_all_external(model: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True)
    onnx.save_model(
        onnx.load(str(model)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location="model.onnx.data", size_threshold=0,
    )  # fmt: skip
    return path


def build(args: list[str], cache_dir: Path) -> EngineArtifact:
    outcome = kiln([*args, "--json", "--cache-dir", str(cache_dir)])
    assert outcome.exit_code == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report["path"] == "build"
    return EngineArtifact.read(Path(report["artifact"]))


def engine_outputs(artifact: EngineArtifact, inputs: dict[str, Array]) -> dict[str, Array]:
    engine = create_backend("onnxruntime").load(artifact)
    try:
        return engine.create_instance().run(inputs)
    finally:
        engine.close()


@pytest.mark.parametrize("name", ["ctr", "cnn", "ranker"])
def test_a_model_with_every_tensor_external_builds_the_same_engine(
    examples: dict[str, Example], tmp_path: Path, name: str
) -> None:
    example = examples[name]
    external = save_all_external(example.model, tmp_path / "external" / "model.onnx")
    assert all(is_external(t) for t in onnx.load(str(external), load_external_data=False).graph.initializer)

    inline_artifact = build(example.args(), tmp_path / "cache-inline")
    external_artifact = build(example.args(model=external), tmp_path / "cache-external")

    assert external_artifact.manifest.fingerprint == inline_artifact.manifest.fingerprint
    assert external_artifact.manifest.key == inline_artifact.manifest.key
    samples = load_samples(example.validation).inputs
    batch = {key: np.asarray(value[:8]) for key, value in samples.items()}
    got, want = engine_outputs(external_artifact, batch), engine_outputs(inline_artifact, batch)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
