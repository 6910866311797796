"""``kiln gate`` end to end on the tiny CTR example: the repository's own CI gate (build, check,
publish, then gate a retrained model against the published version served over HTTP), and every
kind of bad input. Thresholds on speed are set so that no test depends on the machine's speed,
except where a test needs a threshold nothing can reach."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from kiln.bench.peers import PeerProcess, PeerSpec, free_port
from kiln.cli.demo import prepare_example
from kiln.cli.main import app
from kiln.examples import build_model
from kiln.model.load import load_model
from kiln.repository.publish import publish_version

SHORT = ["--duration-s", "0.4", "--warmup-s", "0.1", "--concurrency", "1,4", "--load-rate", "50"]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_example(tmp_path_factory.mktemp("gate"), "ctr", "tiny")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def gate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["gate", *args])
    return result.exit_code, result.output


def kiln_cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from kiln.cli.main import main; sys.argv[0] = 'kiln'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_ci_gate_builds_checks_publishes_then_gates_a_retrain_against_the_served_version(
    example: Path, cache: Path, tmp_path: Path
) -> None:
    repo, reports = tmp_path / "repo", tmp_path / "reports"
    repo.mkdir()
    common = ["--task", "ctr", "--cache-dir", str(cache),
              "--max-accuracy-drop", "0.001", "--max-p99-ms", "2000", "--min-speedup", "0.01",
              "--max-build-s", "600", *SHORT]  # fmt: skip
    first = kiln_cli("gate", str(example / "ctr.onnx"), *common, "--validation", str(example / "validation"),
                     "--publish", str(repo),
                     "--json", str(reports / "gate.json"), "--junit", str(reports / "gate.xml"))  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    report = json.loads((reports / "gate.json").read_text())
    assert report["passed"] is True
    assert re.fullmatch(r"ctr-[0-9a-f]{8}-cpu-[a-z0-9-]+-fp32", report["tag"])
    assert {c["name"].split(" (")[0]: c["status"] for c in report["checks"]} == {
        "accuracy vs fp32": "pass", "signature vs served": "skipped", "p99 at 50/s": "pass",
        "speedup vs unoptimized": "pass", "build time": "pass",
    }  # fmt: skip
    assert ET.parse(reports / "gate.xml").getroot().get("failures") == "0"
    version = json.loads((repo / "ctr" / "1" / "kiln-version.json").read_text())
    assert version["tag"] == report["tag"]
    assert (repo / "ctr" / "1" / "READY").is_file()

    with PeerProcess(PeerSpec("fastapi-ort", repo / "ctr" / "1" / "model.onnx", "ctr")) as served:
        retrained = example / "retrained"  # its validation samples are labelled by the new weights
        second = kiln_cli("gate", str(retrained / "ctr.onnx"), "--name", "ctr", *common,
                          "--validation", str(retrained / "validation"),
                          "--served-url", served.url, "--max-drop-vs-served", "0.05",
                          "--publish", str(repo))  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    assert "accuracy vs served" in second.stdout
    assert (repo / "ctr" / "2" / "model.onnx").read_bytes() == (
        example / "retrained" / "ctr.onnx"
    ).read_bytes()


def test_a_server_that_is_not_there_exits_2(example: Path, cache: Path) -> None:
    code, output = gate(str(example / "ctr.onnx"), "--served-url", f"127.0.0.1:{free_port()}")
    assert code == 2
    assert "no KServe v2 server answers at" in output


def test_a_model_the_server_does_not_serve_exits_2_naming_what_it_serves(example: Path) -> None:
    with PeerProcess(PeerSpec("fastapi-ort", example / "ctr.onnx", "ctr")) as served:
        code, output = gate(str(example / "ctr.onnx"), "--served-url", served.url, "--served-model", "nope")
    assert code == 2
    assert "does not serve model 'nope'" in output
    assert "it serves: ctr" in output


def test_a_load_step_failing_every_request_is_reported_and_the_gate_goes_on(
    example: Path, cache: Path, tmp_path: Path
) -> None:
    code, _ = gate(str(example / "ctr.onnx"), "--cache-dir", str(cache), "--int-range", "100000000:100000001",
                        "--max-p99-ms", "1000", "--min-speedup", "0.01", "--max-build-s", "600",
                        "--json", str(tmp_path / "g.json"), *SHORT)  # fmt: skip
    assert code == 1
    checks = {c["name"].split(" (")[0]: c for c in json.loads((tmp_path / "g.json").read_text())["checks"]}
    assert checks["p99 at 50/s"]["status"] == "fail"
    assert "every request failed" in checks["p99 at 50/s"]["detail"]
    assert checks["speedup vs unoptimized"]["status"] == "fail"
    assert checks["build time"]["status"] == "pass"  # the checks after the failing step still ran


def test_an_unreachable_threshold_fails_and_an_unusable_one_is_bad_input(example: Path, cache: Path) -> None:
    code, output = gate(
        str(example / "ctr.onnx"), "--cache-dir", str(cache), "--min-speedup", "1000000", *SHORT
    )
    assert code == 1
    assert "gate failed: speedup vs unoptimized" in output
    code, output = gate(str(example / "ctr.onnx"), "--max-p99-ms", "-5")
    assert code == 2
    assert "--max-p99-ms is not a usable threshold" in output


def test_a_candidate_with_another_signature_fails_naming_the_difference(
    example: Path, cache: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    other = build_model("ranker", tmp_path / "ranker.onnx", size="tiny")
    publish_version(repo, "ctr", {"model.onnx": other})
    code, _ = gate(str(example / "ctr.onnx"), "--repo", str(repo), "--cache-dir", str(cache),
                        "--json", str(tmp_path / "g.json"), *SHORT)  # fmt: skip
    assert code == 1
    check = next(
        c
        for c in json.loads((tmp_path / "g.json").read_text())["checks"]
        if c["name"] == "signature vs served"
    )
    assert check["status"] == "fail"
    assert "input 'dense' is new (not in the served model)" in check["detail"]


def test_a_candidate_saved_with_every_tensor_external_is_gated_and_published_with_its_data(
    example: Path, cache: Path, tmp_path: Path
) -> None:
    candidate = tmp_path / "export" / "ctr.onnx"
    candidate.parent.mkdir()
    onnx.save_model(onnx.load(str(example / "ctr.onnx")), str(candidate), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ctr.onnx.data", size_threshold=0)  # fmt: skip
    repo = tmp_path / "repo"
    repo.mkdir()

    samples = str(example / "validation")
    code, output = gate(str(candidate), "--cache-dir", str(cache), "--validation", samples,
                        "--publish", str(repo), *SHORT)  # fmt: skip

    assert code == 0, output
    version = repo / "ctr" / "1"
    assert (version / "ctr.onnx.data").read_bytes() == (candidate.parent / "ctr.onnx.data").read_bytes()
    assert load_model(version / "model.onnx").fingerprint == load_model(example / "ctr.onnx").fingerprint
