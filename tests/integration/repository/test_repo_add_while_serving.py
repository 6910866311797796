"""``kiln repo add`` into a repository a real server watches: the server picks the version up, and
``kiln repo ls --url`` shows the server's index next to ``kiln repo ls`` from the files."""

from __future__ import annotations

import json
from pathlib import Path

from repo_harness import ctr_bytes, repo_server
from typer.testing import CliRunner

from kiln.cli.main import app

runner = CliRunner()


def test_add_while_serving_then_ls_from_files_and_from_the_server(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "ctr.onnx").write_bytes(ctr_bytes(seed=0))
    (tmp_path / "ctr-2.onnx").write_bytes(ctr_bytes(seed=1))
    added = runner.invoke(app, ["repo", "add", str(repo), "ctr", str(tmp_path / "ctr.onnx")])
    assert added.exit_code == 0, added.output
    with repo_server(repo, tmp_path / "cache") as server:
        server.wait_state("ctr", "1", "READY")
        added = runner.invoke(app, ["repo", "add", str(repo), "ctr", str(tmp_path / "ctr-2.onnx")])
        assert added.exit_code == 0, added.output
        server.wait_state("ctr", "2", "READY")
        assert server.infer()[0] == "2"

        files = runner.invoke(app, ["repo", "ls", str(repo), "--json"])
        url = f"http://{server.http_url}"
        served = runner.invoke(app, ["repo", "ls", "--url", url, "--json"])
    assert [(r["version"], r["state"]) for r in json.loads(files.output)] == [("1", "ready"), ("2", "ready")]
    by_version = {r["version"]: r["state"] for r in json.loads(served.output)}
    assert by_version["2"] == "READY"
    unreachable = runner.invoke(app, ["repo", "ls", "--url", url])
    assert unreachable.exit_code == 1
    assert "cannot reach the server" in unreachable.output
