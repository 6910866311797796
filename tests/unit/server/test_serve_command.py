from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import kiln.repository
from kiln.cli.main import app
from kiln.errors import ConfigError
from kiln.runtime import Runtime

runner = CliRunner()


def test_a_missing_repository_folder_is_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "not a folder" in result.output


def test_bad_options_are_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path), "--http-port", "70000"])
    assert result.exit_code == 2
    assert "http_port" in result.output
    result = runner.invoke(app, ["serve", str(tmp_path), "--admin-token", "short"])
    assert result.exit_code == 2
    assert "admin_token" in result.output


def test_without_the_repository_module_serve_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(kiln.repository, "create_repository", raising=False)
    result = runner.invoke(app, ["serve", str(tmp_path), "--http-port", "0", "--no-grpc"])
    assert result.exit_code == 1
    assert "no model repository yet" in result.output


def test_the_repository_is_built_by_its_factory_with_the_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Path, object]] = []
    given: list[dict[str, object]] = []

    def create_repository(path: Path, runtime: Runtime, **options: object) -> None:
        seen.append((path, runtime))
        given.append(options)
        raise ConfigError("model 'ctr' has a bad config.yaml")

    monkeypatch.setattr(kiln.repository, "create_repository", create_repository, raising=False)
    result = runner.invoke(app, ["serve", str(tmp_path), "--http-port", "0", "--grpc-port", "0"])
    assert result.exit_code == 2
    assert "bad config.yaml" in result.output
    assert seen[0][0] == tmp_path
    assert isinstance(seen[0][1], Runtime)
    assert {"metrics", "efficiency", "poll_interval_s", "cache_dir"} <= set(given[0])
