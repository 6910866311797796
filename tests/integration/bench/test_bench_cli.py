"""``kiln bench`` end to end: against a stub KServe v2 server, and in-process on a tiny model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kserve_stub import free_port, http_stub
from typer.testing import CliRunner

from kiln import examples
from kiln.cli.main import app

SHORT = ["--duration-s", "0.3", "--warmup-s", "0.05", "--quiet"]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with http_stub() as (url, _):
        yield url


def test_against_a_server_with_every_output(server: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["bench", "--url", server, "--model", "add", "--concurrency", "1,2", "--rate", "50",
         "--soak-s", "1", "--json", str(out / "r.json"), "--markdown", str(out / "r.md"),
         "--plot", str(out / "r.png"), *SHORT],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "r.json").read_text())
    steps = next(iter(report["variants"].values()))
    assert [s["label"] for s in steps] == ["c=1", "c=2", "50/s"]
    assert all(s["failed"] == 0 and s["ok"] > 0 for s in steps)
    assert steps[0]["split"]["source"] == "server-stats"
    soak = next(iter(report["soaks"].values()))
    assert soak["step"]["split"]["source"] == "server-stats"
    assert "| c=2 |" in (out / "r.md").read_text()
    assert (out / "r.png").stat().st_size > 10_000
    assert (out / "r-soak.png").stat().st_size > 10_000


def test_a_model_the_server_does_not_serve_exits_2(server: str) -> None:
    result = CliRunner().invoke(app, ["bench", "--url", server, "--model", "nope", *SHORT])
    assert result.exit_code == 2
    assert "does not serve model 'nope'" in result.output
    assert "it serves: add, broken" in result.output


def test_no_server_exits_2() -> None:
    result = CliRunner().invoke(app, ["bench", "--url", f"127.0.0.1:{free_port()}", "--model", "add", *SHORT])
    assert result.exit_code == 2
    assert "no KServe v2 server answers" in result.output


def test_a_step_failing_every_request_is_reported_and_exits_1(server: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["bench", "--url", server, "--model", "broken", "--concurrency", "1,2",
              "--json", str(tmp_path / "r.json"), *SHORT],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "every request failed in 2 step(s)" in result.output
    steps = next(iter(json.loads((tmp_path / "r.json").read_text())["variants"].values()))
    assert [s["errors"] for s in steps] == [
        {"HTTP 500": steps[0]["failed"]},
        {"HTTP 500": steps[1]["failed"]},
    ]


def test_bad_options_exit_2(server: str, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["bench", "--model", "add", *SHORT]).exit_code == 2  # no target
    assert runner.invoke(app, ["bench", "--url", server, *SHORT]).exit_code == 2  # no model
    bad = runner.invoke(app, ["bench", "--url", server, "--model", "add", "--concurrency", "a,b", *SHORT])
    assert bad.exit_code == 2
    assert "bad concurrency list" in bad.output
    mode = runner.invoke(app, ["bench", "--engine", str(tmp_path / "none.onnx"), "--mode", "fast", *SHORT])
    assert mode.exit_code == 2
    assert "unknown --mode (seen: fast); use one of runtime, engine" in mode.output
    missing = runner.invoke(app, ["bench", "--engine", str(tmp_path / "none.onnx"), *SHORT])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output


@pytest.mark.parametrize("mode", ["runtime", "engine"])
def test_in_process_on_a_tiny_model(mode: str, tmp_path: Path) -> None:
    model = examples.build_model("ctr", tmp_path / "ctr.onnx", size="tiny")
    samples = examples.write_samples("ctr", tmp_path / "samples", count=64, size="tiny", per_file=64)
    result = CliRunner().invoke(
        app,
        ["bench", "--engine", str(model), "--mode", mode, "--cache-dir", str(tmp_path / "cache"),
         "--concurrency", "4", "--inputs", str(samples), "--max-queue-delay-us", "200",
         "--json", str(tmp_path / "r.json"), *SHORT],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model"] == "ctr"
    (step,) = next(iter(report["variants"].values()))
    assert step["ok"] > 0
    assert step["failed"] == 0
    assert step["split"]["source"] == "per-request"
    assert list(step["versions"]) == (["1"] if mode == "runtime" else [])
