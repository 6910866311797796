"""Reading the repository folder, and the completeness rule of version folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.repository.layout import classify, is_model_name, is_temporary, is_version_name
from kiln.repository.publish import publish_version
from kiln.repository.scan import (
    ModelFolder,
    RepoFolder,
    RepoScan,
    VersionFolder,
    read_repository,
    scan_repository,
    settle,
)

SETTLE_S = 1.0


def write(path: Path, data: bytes = b"onnx") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def version(name: str, *files: tuple[str, int, int], marker: bool = False) -> VersionFolder:
    stamps = files or (("model.onnx", 100, 1),)
    return VersionFolder(name, tuple(stamps), any(f[0] == "model.onnx" for f in stamps), marker)


def repo(*versions: VersionFolder, config: str | None = None, name: str = "ctr") -> RepoFolder:
    return RepoFolder((ModelFolder(name, config, tuple(versions)),))


class Scanner:
    """Settles successive folder states at chosen times, as the watcher does."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        self.scan: RepoScan | None = None
        self.settle_s = settle_s

    def at(self, now_s: float, folder: RepoFolder, *, trusted: frozenset[str] = frozenset()) -> RepoScan:
        self.scan = settle(self.scan, folder, now_s=now_s, settle_s=self.settle_s, trusted=trusted)
        return self.scan

    def state(self, model: str = "ctr", name: str = "1") -> tuple[bool, str]:
        assert self.scan is not None
        scan = self.scan.models[model].versions[name]
        return scan.complete, scan.reason


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1", "2", "42", "123456789012345678"])
def test_versions_are_positive_integers(name: str) -> None:
    assert is_version_name(name)
    assert classify(name) == "version"


@pytest.mark.parametrize("name", ["0", "007", "v1", "1.0", "-1", "", "1234567890123456789", "１"])
def test_other_names_are_not_versions(name: str) -> None:
    assert not is_version_name(name)


@pytest.mark.parametrize(
    "name", [".2", ".2.tmp", "2.tmp", "2.partial", "2.part", "2~", "2.incomplete", ".kiln"]
)
def test_writer_temporary_names_are_ignored(name: str) -> None:
    assert is_temporary(name)
    assert classify(name) == "temporary"


def test_model_names_are_url_safe() -> None:
    assert is_model_name("ctr")
    assert is_model_name("ranker-v2.1")
    assert is_model_name("cnn_1")
    assert not is_model_name(".hidden")
    assert not is_model_name("a b")
    assert not is_model_name("-x")


# -- reading -------------------------------------------------------------------------------------


def test_read_repository_lists_models_configs_versions_and_files(tmp_path: Path) -> None:
    write(tmp_path / "ctr" / "config.yaml", b"precision: int8\n")
    write(tmp_path / "ctr" / "1" / "model.onnx", b"x" * 10)
    write(tmp_path / "ctr" / "2" / "model.onnx")
    write(tmp_path / "ctr" / "2" / "weights" / "w.bin", b"w" * 7)
    write(tmp_path / "ctr" / "2" / "READY", b"")
    write(tmp_path / "ctr" / "3" / "notes.txt")
    write(tmp_path / "ctr" / ".4.tmp" / "model.onnx")
    write(tmp_path / "ctr" / "calibration" / "part-00000.npz")
    write(tmp_path / "ranker" / "1" / "model.onnx")
    write(tmp_path / ".kiln" / "usage.sqlite")
    write(tmp_path / "bad name" / "1" / "model.onnx")
    write(tmp_path / "README.md")
    folder = read_repository(tmp_path)
    assert [m.name for m in folder.models] == ["ctr", "ranker"]
    assert folder.ignored == (("bad name", "not a model name (letters, digits, '_', '-', '.')"),)
    ctr = folder.models[0]
    assert ctr.config_text == "precision: int8\n"
    assert [v.version for v in ctr.versions] == ["1", "2", "3"]
    one, two, three = ctr.versions
    assert one.files[0][:2] == ("model.onnx", 10)
    assert one.has_model
    assert not one.has_marker
    assert [f[0] for f in two.files] == ["model.onnx", "weights/w.bin"]
    assert two.has_marker
    assert not three.has_model
    assert ctr.ignored == (("calibration", "not a version (version folders are positive integers)"),)
    assert folder.models[1].config_text is None


def test_versions_sort_numerically_and_a_missing_root_is_empty(tmp_path: Path) -> None:
    for name in ("10", "9", "100"):
        write(tmp_path / "m" / name / "model.onnx")
    assert [v.version for v in read_repository(tmp_path).models[0].versions] == ["9", "10", "100"]
    assert read_repository(tmp_path / "nope").models == ()


def test_a_changed_file_changes_the_stamp_but_the_marker_does_not(tmp_path: Path) -> None:
    model = write(tmp_path / "m" / "1" / "model.onnx")
    before = read_repository(tmp_path).models[0].versions[0].stamp
    write(tmp_path / "m" / "1" / "READY", b"")
    assert read_repository(tmp_path).models[0].versions[0].stamp == before
    os.utime(model, ns=(1, 1))
    assert read_repository(tmp_path).models[0].versions[0].stamp != before


def test_an_unreadable_config_is_reported_not_raised(tmp_path: Path) -> None:
    write(tmp_path / "m" / "config.yaml", b"\xff\xfe not utf-8")
    model = read_repository(tmp_path).models[0]
    assert model.config_text is None
    assert model.config_error is not None
    assert "cannot be read" in model.config_error


# -- settling: rename mode -------------------------------------------------------------------


def test_a_renamed_folder_is_complete_once_unchanged_for_settle_s() -> None:
    scanner = Scanner()
    scanner.at(10.0, repo(version("1")))
    complete, reason = scanner.state()
    assert not complete
    assert reason.startswith("settling")
    scanner.at(10.5, repo(version("1")))
    assert not scanner.state()[0]
    scanner.at(11.0, repo(version("1")))
    assert scanner.state() == (True, "")


def test_a_folder_copied_file_by_file_needs_a_marker() -> None:
    scanner = Scanner()
    scanner.at(10.0, repo(version("1", ("config.pbtxt", 5, 1))))  # the final folder, model not there yet
    assert scanner.state() == (False, "incomplete: no model.onnx yet")
    scanner.at(11.0, repo(version("1", ("model.onnx", 10, 2))))  # half written
    scanner.at(20.0, repo(version("1", ("model.onnx", 100, 3))))
    complete, reason = scanner.state()
    assert not complete
    assert "waiting for its READY file" in reason
    assert "changed while being watched" in reason
    scanner.at(30.0, repo(version("1", ("model.onnx", 100, 3), marker=True)))
    assert scanner.state() == (True, "")


def test_a_folder_growing_between_scans_is_never_accepted_without_a_marker() -> None:
    scanner = Scanner()
    scanner.at(10.0, repo(version("1", ("model.onnx", 10, 1))))
    for step in range(1, 20):
        scanner.at(10.0 + 2 * step, repo(version("1", ("model.onnx", 10 + step, 1 + step))))
        assert not scanner.state()[0]
    scanner.at(100.0, repo(version("1", ("model.onnx", 29, 20))))  # stable now, but seen changing
    assert not scanner.state()[0]


def test_an_explicit_load_trusts_a_folder_at_once() -> None:
    scanner = Scanner()
    scanner.at(10.0, repo(version("1")), trusted=frozenset({"ctr"}))
    assert scanner.state() == (True, "")


def test_settle_zero_still_needs_two_scans() -> None:
    scanner = Scanner(settle_s=0.0)
    scanner.at(10.0, repo(version("1")))
    assert not scanner.state()[0]
    scanner.at(10.001, repo(version("1")))
    assert scanner.state()[0]


# -- settling: marker mode ------------------------------------------------------------------


def test_once_any_version_has_a_marker_every_new_version_needs_one() -> None:
    scanner = Scanner()
    scanner.at(10.0, repo(version("1", marker=True), version("2")))
    assert scanner.scan is not None
    assert scanner.scan.models["ctr"].marker_mode
    assert scanner.state(name="1") == (True, "")
    complete, reason = scanner.state(name="2")
    assert not complete
    assert "this model's versions are marked complete by a READY file" in reason
    scanner.at(99.0, repo(version("1", marker=True), version("2")))
    assert not scanner.state(name="2")[0]


def test_completeness_marker_in_the_config_requires_markers() -> None:
    scanner = Scanner()
    config = "completeness: marker\n"
    scanner.at(10.0, repo(version("1"), config=config))
    scanner.at(20.0, repo(version("1"), config=config))
    assert not scanner.state()[0]
    scanner.at(21.0, repo(version("1", marker=True), config=config))
    assert scanner.state()[0]


def test_completeness_rename_ignores_markers_of_other_versions() -> None:
    scanner = Scanner()
    config = "completeness: rename\n"
    scanner.at(10.0, repo(version("1", marker=True), version("2"), config=config))
    scanner.at(11.0, repo(version("1", marker=True), version("2"), config=config))
    assert scanner.state(name="2")[0]


def test_accepted_versions_stay_accepted_when_markers_appear_elsewhere() -> None:
    scanner = Scanner()
    scanner.at(10.0, repo(version("1")))
    scanner.at(11.0, repo(version("1")))
    scanner.at(12.0, repo(version("1"), version("2", marker=True)))
    assert scanner.state(name="1")[0]
    assert scanner.state(name="2")[0]


def test_removing_the_marker_of_an_accepted_version_does_not_retract_it() -> None:
    scanner = Scanner()
    scanner.at(10.0, repo(version("1", marker=True), version("2", marker=True)))
    scanner.at(11.0, repo(version("1", marker=True), version("2", ("model.onnx", 100, 1), marker=False)))
    # the files did not change, so version 2 keeps its acceptance (its marker is not in the stamp)
    assert scanner.state(name="2")[0]


def test_a_rewritten_accepted_version_keeps_its_old_content_until_the_new_one_settles() -> None:
    scanner = Scanner()
    scanner.at(10.0, repo(version("1", marker=True)))
    accepted = scanner.scan.models["ctr"].versions["1"].accepted_stamp if scanner.scan else None
    scanner.at(20.0, repo(version("1", ("model.onnx", 50, 9), marker=True)))
    scan = scanner.scan.models["ctr"].versions["1"] if scanner.scan else None
    assert scan is not None
    assert scan.accepted_stamp == accepted
    assert "files changed" in scan.reason
    scanner.at(21.5, repo(version("1", ("model.onnx", 50, 9), marker=True)))
    scan = scanner.scan.models["ctr"].versions["1"] if scanner.scan else None
    assert scan is not None
    assert scan.accepted_stamp == scan.folder.stamp != accepted


def test_a_version_that_lost_its_model_is_no_longer_complete() -> None:
    scanner = Scanner()
    scanner.at(10.0, repo(version("1", marker=True)))
    scanner.at(11.0, repo(version("1", ("other", 1, 1), marker=True)))
    assert scanner.state() == (False, "incomplete: no model.onnx yet")


def test_an_invalid_config_falls_back_to_auto_completeness() -> None:
    scanner = Scanner()
    scanner.at(10.0, repo(version("1", marker=True), version("2"), config="completeness: [\n"))
    assert scanner.scan is not None
    assert scanner.scan.models["ctr"].marker_mode


def test_complete_versions_are_listed_oldest_first() -> None:
    scanner = Scanner()
    folder = repo(version("10", marker=True), version("9", marker=True), version("2"))
    scan = scanner.at(10.0, folder)
    assert scan.models["ctr"].complete_versions() == ["9", "10"]


def test_a_version_from_publish_version_is_complete_at_the_first_scan(tmp_path: Path) -> None:
    publish_version(tmp_path, "ctr", {"model.onnx": b"v1"})
    first = scan_repository(tmp_path, None, now_s=0.0, settle_s=3600.0)
    publish_version(tmp_path, "ctr", {"model.onnx": b"v2"})
    second = scan_repository(tmp_path, first, now_s=0.0, settle_s=3600.0)

    assert first.models["ctr"].complete_versions() == ["1"]
    assert second.models["ctr"].marker_mode
    assert second.models["ctr"].complete_versions() == ["1", "2"]
