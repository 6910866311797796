from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.cache.checksum import checksum_folder, verify_files
from kiln.cache.efficiency import read_efficiency_factor, record_efficiency_factor
from kiln.compile.backends.base import MANIFEST_NAME, EngineArtifact, Manifest
from kiln.errors import ConfigError


def write_artifact(folder: Path) -> EngineArtifact:
    folder.mkdir()
    (folder / "engine.onnx").write_bytes(b"engine bytes")
    manifest = Manifest(
        key="k" * 64, backend="onnxruntime", engine_file="engine.onnx",
        fingerprint={"structure_hash": "s" * 64, "weights_hash": "w" * 64}, spec={}, target={},
        inputs=(), outputs=(), files=checksum_folder(folder), build_path="build",
        build_seconds=1.0, created_at=0.0,
    )  # fmt: skip
    (folder / MANIFEST_NAME).write_text(manifest.dumps())
    return EngineArtifact(folder, manifest)


def test_unmeasured_or_unreadable_counts_one(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "a")
    assert read_efficiency_factor(artifact) == 1.0
    assert read_efficiency_factor(tmp_path / "nowhere") == 1.0
    (artifact.path / MANIFEST_NAME).write_text("not json")
    assert read_efficiency_factor(artifact.path) == 1.0


def test_recorded_factor_is_read_back_and_checksums_stay_valid(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "a")
    updated = record_efficiency_factor(artifact, 3.25)
    assert updated.manifest.efficiency_factor == 3.25
    assert read_efficiency_factor(artifact.path) == 3.25
    on_disk = Manifest.from_json(json.loads((artifact.path / MANIFEST_NAME).read_text()))
    verify_files(artifact.path, on_disk.files)  # raises CacheCorrupt on a mismatch
    assert sorted(p.name for p in artifact.path.iterdir()) == ["engine.onnx", MANIFEST_NAME]


@pytest.mark.parametrize("factor", [0.0, -1.0, float("nan"), float("inf")])
def test_a_factor_must_be_finite_and_positive(tmp_path: Path, factor: float) -> None:
    artifact = write_artifact(tmp_path / "a")
    with pytest.raises(ConfigError, match="finite number > 0"):
        record_efficiency_factor(artifact, factor)
    assert read_efficiency_factor(artifact) == 1.0
