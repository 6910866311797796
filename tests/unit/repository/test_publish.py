from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from kiln.errors import ConfigError, ModelError
from kiln.examples import make_model
from kiln.model.load import load_model
from kiln.repository.publish import METADATA_FILE, model_files, next_version, publish_version


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


def _save_with_data(folder: Path, location: str) -> Path:
    """The tiny ranker with every tensor in ``location`` (relative to ``folder``)."""
    folder.mkdir(parents=True)
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    model = make_model("ranker", size="tiny")
    path = folder / "ranker.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
        size_threshold=0,
    )  # fmt: skip
    return path


def test_model_files_carry_the_external_data_into_the_version(tmp_path: Path) -> None:
    path = _save_with_data(tmp_path / "export", "weights/ranker.data")
    repo = tmp_path / "repo"
    repo.mkdir()

    files = model_files(path)
    published = publish_version(repo, "ranker", dict(files))

    assert set(files) == {"model.onnx", "weights/ranker.data"}
    assert (published.path / "weights" / "ranker.data").read_bytes() == (
        path.parent / "weights" / "ranker.data"
    ).read_bytes()
    inline = load_model(save_inline(make_model("ranker", size="tiny"), tmp_path / "inline.onnx"))
    assert load_model(published.path / "model.onnx").fingerprint == inline.fingerprint


def test_model_files_refuse_external_data_outside_the_model_folder(tmp_path: Path) -> None:
    path = _save_with_data(tmp_path / "export", "ranker.data")
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../ranker.data"
    onnx.save_model(model, str(path))

    with pytest.raises(ModelError) as caught:
        model_files(path)

    assert "'..'" in caught.value.problems[0].what


def save_inline(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(model, str(path))
    return path
