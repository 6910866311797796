from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kiln.repository.add
from kiln.cli.main import app
from kiln.examples import build_model

runner = CliRunner()
CONFIG = "max_batch_size: 8\nbatching:\n  max_queue_delay_us: 200\n"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_model("ctr", tmp_path / "ctr.onnx", size="tiny")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "repo").mkdir()
    return tmp_path / "repo"


def add(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["repo", "add", *map(str, args)])
    return result.exit_code, result.output


def everything_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def test_add_publishes_the_next_free_version_with_its_config(repo: Path, model: Path, tmp_path: Path) -> None:
    (tmp_path / "ctr.yaml").write_text(CONFIG)
    code, output = add(repo, "ctr", model, "--config", tmp_path / "ctr.yaml")
    assert code == 0, output
    assert f"published ctr version 1 ({repo / 'ctr' / '1'})" in output
    assert (repo / "ctr" / "config.yaml").read_text() == CONFIG
    assert (repo / "ctr" / "1" / "model.onnx").read_bytes() == model.read_bytes()
    assert (repo / "ctr" / "1" / "READY").exists()

    code, output = add(repo, "ctr", model, "--json")
    assert code == 0, output
    body = json.loads(output)
    assert (body["version"], body["config_written"], body["ops_checked"]) == ("2", False, True)
    code, output = add(repo, "ctr", model, "--version", "7")
    assert code == 0, output
    assert sorted(p.name for p in (repo / "ctr").iterdir()) == ["1", "2", "7", "config.yaml"]


def test_bad_input_is_refused_with_exit_2_before_anything_is_written(
    repo: Path, model: Path, tmp_path: Path
) -> None:
    (tmp_path / "bad.yaml").write_text("max_batch_sise: 8\n")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    (tmp_path / "profile.yaml").write_text("profiles:\n  nope: {min: [1, 2], opt: [1, 2], max: [1, 2]}\n")
    cases = [
        ((repo, "ctr", model, "--config", tmp_path / "bad.yaml"), "unknown key 'max_batch_sise'"),
        ((repo, "ctr", tmp_path / "garbage.onnx"), "is not an ONNX model"),
        ((repo, "ctr", model, "--config", tmp_path / "profile.yaml"), "unknown input 'nope'"),
        ((repo, "ctr", tmp_path / "missing.onnx"), "missing.onnx"),
        ((repo, "../up", model), "not a model name"),
        ((repo, "ctr", model, "--config", tmp_path / "none.yaml"), "cannot read"),
        ((tmp_path / "no-repo", "ctr", model), "not a folder"),
    ]
    for args, message in cases:
        code, output = add(*args)
        assert (code, message in output) == (2, True), (args, output)
    assert everything_under(repo) == []


def test_an_existing_version_or_a_different_config_is_bad_input(
    repo: Path, model: Path, tmp_path: Path
) -> None:
    assert add(repo, "ctr", model)[0] == 0
    code, output = add(repo, "ctr", model, "--version", "1")
    assert code == 2
    assert "version 1 of ctr already exists" in output
    (tmp_path / "ctr.yaml").write_text(CONFIG)
    assert add(repo, "other", model, "--config", tmp_path / "ctr.yaml")[0] == 0
    (tmp_path / "changed.yaml").write_text("max_batch_size: 4\n")
    code, output = add(repo, "other", model, "--config", tmp_path / "changed.yaml")
    assert code == 2
    assert "exists and differs" in output
    assert sorted(p.name for p in (repo / "other").iterdir()) == ["1", "config.yaml"]


def test_a_failed_write_is_an_internal_error_that_leaves_nothing_behind(
    repo: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kiln.repository.add, "publish_version", disk_full)
    (tmp_path / "ctr.yaml").write_text(CONFIG)
    code, output = add(repo, "ctr", model, "--config", tmp_path / "ctr.yaml")
    assert code == 1
    assert "No space left on device" in output
    assert everything_under(repo) == []


def test_ls_lists_versions_and_states_as_text_and_json(repo: Path, model: Path) -> None:
    assert add(repo, "ctr", model)[0] == 0
    (repo / "ctr" / "2").mkdir()
    result = runner.invoke(app, ["repo", "ls", str(repo)])
    assert result.exit_code == 0, result.output
    lines = [line.split(maxsplit=3) for line in result.output.splitlines()]
    assert lines == [
        ["MODEL", "VERSION", "STATE", "REASON"],
        ["ctr", "1", "ready"],
        ["ctr", "2", "incomplete", "no model.onnx yet"],
    ]
    result = runner.invoke(app, ["repo", "ls", str(repo), "--json"])
    assert json.loads(result.output)[0] == {"model": "ctr", "version": "1", "state": "ready", "reason": ""}


def test_ls_needs_a_folder_or_a_url(tmp_path: Path) -> None:
    result = runner.invoke(app, ["repo", "ls"])
    assert result.exit_code == 2
    assert "--url" in result.output
    result = runner.invoke(app, ["repo", "ls", str(tmp_path / "nope")])
    assert result.exit_code == 2
    result = runner.invoke(app, ["repo", "ls", "--url", "ftp://example"])
    assert result.exit_code == 2
    assert "not an HTTP URL" in result.output
