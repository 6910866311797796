from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.errors import ConfigError
from kiln.repository.publish import METADATA_FILE, next_version, publish_version


def _leftovers(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.name.startswith("."))


def test_first_publish_is_version_one_with_marker_and_tag(tmp_path: Path) -> None:
    published = publish_version(tmp_path, "ctr", {"model.onnx": b"onnx"}, tag="ctr-abc-cpu-int8")
    assert published.version == "1"
    assert (published.path / "model.onnx").read_bytes() == b"onnx"
    assert (published.path / "READY").exists()
    assert "ctr-abc-cpu-int8" in (published.path / METADATA_FILE).read_text()
    assert _leftovers(tmp_path / "ctr") == []


def test_next_version_is_numeric_not_lexical(tmp_path: Path) -> None:
    for name in ("1", "9", "10", ".11.x.tmp", "calibration"):
        (tmp_path / "ctr" / name).mkdir(parents=True)
    assert next_version(tmp_path / "ctr") == "11"
    assert publish_version(tmp_path, "ctr", {"model.onnx": b"x"}).version == "11"


def test_copies_files_from_paths(tmp_path: Path) -> None:
    source = tmp_path / "src.onnx"
    source.write_bytes(b"weights")
    repo = tmp_path / "repo"
    repo.mkdir()
    published = publish_version(repo, "m", {"model.onnx": source, "data/extra.bin": b"1"})
    assert (published.path / "model.onnx").read_bytes() == b"weights"
    assert (published.path / "data" / "extra.bin").read_bytes() == b"1"


@pytest.mark.parametrize(
    ("model", "files", "version", "needle"),
    [
        ("../x", {"model.onnx": b""}, None, "model name"),
        ("ctr", {"other.onnx": b""}, None, "model.onnx"),
        ("ctr", {"model.onnx": b"", "READY": b""}, None, "READY"),
        ("ctr", {"model.onnx": b""}, "01", "version number"),
    ],
)
def test_bad_input_is_refused_and_leaves_nothing(
    tmp_path: Path, model: str, files: dict[str, bytes], version: str | None, needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        publish_version(tmp_path, model, files, version=version)  # type: ignore[arg-type]
    assert not (tmp_path / "ctr").exists() or _leftovers(tmp_path / "ctr") == []


def test_existing_explicit_version_is_refused(tmp_path: Path) -> None:
    publish_version(tmp_path, "ctr", {"model.onnx": b"a"}, version="3")
    with pytest.raises(ConfigError, match="already exists"):
        publish_version(tmp_path, "ctr", {"model.onnx": b"b"}, version="3")
    assert (tmp_path / "ctr" / "3" / "model.onnx").read_bytes() == b"a"


def test_failed_copy_leaves_no_temporary_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        publish_version(tmp_path, "ctr", {"model.onnx": tmp_path / "missing.onnx"})
    assert _leftovers(tmp_path / "ctr") == []
    assert os.listdir(tmp_path / "ctr") == []
