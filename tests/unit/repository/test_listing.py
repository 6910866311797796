from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import ConfigError
from kiln.repository.listing import VersionListing, list_repository
from kiln.repository.publish import publish_version


def write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def no_problem(path: Path) -> str | None:
    return None


def test_states_come_from_the_files_with_their_reasons(tmp_path: Path) -> None:
    publish_version(tmp_path, "ctr", {"model.onnx": b"m"})  # READY marker: ready
    write(tmp_path / "ctr" / "2" / "notes.txt")  # no model.onnx yet
    write(tmp_path / "ctr" / "3" / "model.onnx")  # ctr marks versions: waits for READY
    write(tmp_path / "ctr" / ".4.tmp" / "model.onnx")  # a writer's folder: not listed
    write(tmp_path / "ranker" / "config.yaml", "max_batch_sise: 8\n")
    write(tmp_path / "ranker" / "1" / "model.onnx")
    (tmp_path / "empty").mkdir()
    write(tmp_path / "cnn" / "1" / "model.onnx")  # renamed into place: complete

    rows = list_repository(tmp_path, check_model=no_problem)

    by_key = {(r.model, r.version): r for r in rows}
    assert sorted(by_key) == [
        ("cnn", "1"),
        ("ctr", "1"),
        ("ctr", "2"),
        ("ctr", "3"),
        ("empty", ""),
        ("ranker", "1"),
    ]
    assert by_key["cnn", "1"] == VersionListing("cnn", "1", "ready")
    assert by_key["ctr", "1"] == VersionListing("ctr", "1", "ready")
    assert by_key["ctr", "2"].state == "incomplete"
    assert "no model.onnx" in by_key["ctr", "2"].reason
    assert by_key["ctr", "3"].state == "incomplete"
    assert "READY" in by_key["ctr", "3"].reason
    assert by_key["ranker", "1"].state == "invalid"
    assert "'max_batch_sise'" in by_key["ranker", "1"].reason
    assert by_key["empty", ""] == VersionListing("empty", "", "incomplete", "no version folders")


def test_a_complete_version_whose_model_is_refused_is_invalid(tmp_path: Path) -> None:
    publish_version(tmp_path, "ctr", {"model.onnx": b"m"})
    publish_version(tmp_path, "ctr", {"model.onnx": b"m"})
    checked: list[Path] = []

    def check(path: Path) -> str | None:
        checked.append(path)
        return "not an ONNX model" if path.parent.name == "2" else None

    rows = list_repository(tmp_path, check_model=check)
    assert [(r.version, r.state, r.reason) for r in rows] == [
        ("1", "ready", ""),
        ("2", "invalid", "not an ONNX model"),
    ]
    assert sorted(p.parent.name for p in checked) == ["1", "2"]


def test_the_real_model_check_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    publish_version(tmp_path, "ctr", {"model.onnx": b"not onnx"})
    (row,) = list_repository(tmp_path)
    assert row.state == "invalid"
    assert "is not an ONNX model" in row.reason


def test_listing_something_that_is_not_a_folder_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        list_repository(tmp_path / "nope")
