from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kiln.compile.artifact import checksum_file, checksum_files, write_manifest
from kiln.compile.backends.base import MANIFEST_NAME, BuildOutput, EngineArtifact, Target
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError
from kiln.model.source import Fingerprint, ModelSource
from kiln.types import TensorSpec

TARGET = Target("onnxruntime", "1.0", "cpu", "Test CPU", "avx2", (("cpu_count", "2"),))
SOURCE = ModelSource(
    path=Path("m.onnx"),
    format="onnx",
    fingerprint=Fingerprint("s" * 64, "w" * 64, (("", 18),), 10),
    inputs=(TensorSpec("x", "FP32", (-1, 4)),),
    outputs=(TensorSpec("y", "FP32", (-1, 1)),),
    size_bytes=10,
)


def test_checksum_matches_hashlib(tmp_path: Path) -> None:
    data = b"engine bytes" * 100_000
    (tmp_path / "engine.bin").write_bytes(data)
    entry = checksum_file(tmp_path / "engine.bin")
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert entry.size_bytes == len(data)


def test_write_manifest_round_trips(tmp_path: Path) -> None:
    (tmp_path / "engine.onnx").write_bytes(b"graph")
    (tmp_path / "calibration.json").write_text("{}")
    output = BuildOutput(
        "engine.onnx", ("engine.onnx", "calibration.json"), "calibration-reuse", "calibration.json", {"a": 1}
    )
    spec = BuildSpec(precision="int8", max_batch_size=8)
    artifact = write_manifest(
        tmp_path,
        key="abc",
        source=SOURCE,
        spec=spec,
        target=TARGET,
        output=output,
        build_seconds=1.5,
        accuracy={"drop": 0.01},
        created_at=123.0,
    )
    assert not list(tmp_path.glob(".*tmp"))
    again = EngineArtifact.read(tmp_path)
    assert again.manifest == artifact.manifest
    manifest = again.manifest
    assert manifest.files["engine.onnx"].sha256 == hashlib.sha256(b"graph").hexdigest()
    assert set(manifest.files) == {"engine.onnx", "calibration.json"}
    assert (manifest.build_path, manifest.calibration_file, manifest.extra) == (
        "calibration-reuse",
        "calibration.json",
        {"a": 1},
    )
    assert BuildSpec.from_json(manifest.spec) == spec
    assert Target.from_json(manifest.target) == TARGET
    assert manifest.fingerprint["structure_hash"] == "s" * 64
    assert manifest.inputs == SOURCE.inputs
    assert (manifest.accuracy, manifest.created_at, manifest.backend) == (
        {"drop": 0.01},
        123.0,
        "onnxruntime",
    )
    assert again.engine_path == tmp_path / "engine.onnx"


def test_missing_or_escaping_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.bin").write_bytes(b"x")
    folder = tmp_path / "artifact"
    folder.mkdir()
    with pytest.raises(BuildError, match=r"missing \(seen: engine\.onnx\)"):
        checksum_files(folder, ["engine.onnx"])
    with pytest.raises(BuildError, match="outside the artifact folder"):
        checksum_files(folder, ["../outside.bin"])
    output = BuildOutput("engine.onnx", ("engine.onnx",), "build")
    with pytest.raises(BuildError):
        write_manifest(
            folder, key="k", source=SOURCE, spec=BuildSpec(), target=TARGET, output=output, build_seconds=0
        )
    assert not (folder / MANIFEST_NAME).exists()
