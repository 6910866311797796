from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from kiln.gate.checks import CheckResult
from kiln.gate.report import GateReport, junit_xml, release_tag

CHECKS = (
    CheckResult("accuracy vs fp32", 0.001, 0.01, "<=", "drop", "pass"),
    CheckResult("p99 at 100/s", 12.0, 10.0, "<=", "ms", "fail", "12 ms, needs <= 10 ms"),
    CheckResult("signature vs served", None, None, "<=", "differences", "skipped", "no served version"),
)


def report(checks: tuple[CheckResult, ...] = CHECKS) -> GateReport:
    return GateReport("ctr", "ctr.onnx", "int8", "ctr-3f9a2c1d-cpu-avx512-int8", {"path": "build"}, checks)


def test_release_tag_binds_model_structure_target_and_precision() -> None:
    assert release_tag("ctr", "3f9a2c1d" + "0" * 56, "cpu-avx512", "int8") == "ctr-3f9a2c1d-cpu-avx512-int8"
    assert release_tag("My_Model", "abcdef0123", "cuda-sm90", "fp16") == "my-model-abcdef01-cuda-sm90-fp16"


def test_passed_only_without_failures() -> None:
    assert not report().passed
    assert [c.name for c in report().failed] == ["p99 at 100/s"]
    assert report(CHECKS[:1] + CHECKS[2:]).passed  # skipped checks do not fail a gate


def test_junit_has_a_case_per_check_with_failures_and_skips(tmp_path: Path) -> None:
    suite = ET.fromstring(junit_xml(report()))
    assert suite.get("tests") == "3"
    assert suite.get("failures") == "1"
    assert suite.get("skipped") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["p99 at 100/s"].find("failure")
    assert failure is not None
    assert failure.get("message") == "12 ms, needs <= 10 ms"
    assert cases["signature vs served"].find("skipped") is not None


def test_json_report_round_trips_through_a_file(tmp_path: Path) -> None:
    report().write_json(tmp_path / "gate.json")
    data = json.loads((tmp_path / "gate.json").read_text())
    assert data["passed"] is False
    assert data["tag"] == "ctr-3f9a2c1d-cpu-avx512-int8"
    assert [c["status"] for c in data["checks"]] == ["pass", "fail", "skipped"]
