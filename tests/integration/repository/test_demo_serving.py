"""``kiln demo`` serving: it builds the tiny examples, writes the example repository, serves it with
every engine a cache hit of the demo's own builds, prints the URLs and client commands that work
as printed, and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from kiln.repository.config import parse_model_config
from kiln.repository.convert import build_spec

KILN = [sys.executable, "-c", "from kiln.cli.main import main; main()"]


def test_demo_serves_the_example_repository_from_the_cache(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    args = [
        "demo",
        "--dir",
        str(work),
        "--size",
        "tiny",
        "--only",
        "ctr",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
    ]
    process = subprocess.Popen(
        [*KILN, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout or ()], daemon=True).start()
    seen: list[str] = []
    try:
        while not seen or seen[-1].strip() != "Stop with Ctrl-C.":
            seen.append(lines.get(timeout=240))
        output = "".join(seen)
        assert "kiln ready: ctr 1" in output
        commands = [line.strip() for line in seen if line.startswith("  ")]
        infer = next(c for c in commands if "/infer" in c)
        index = next(c for c in commands if "/repository/index" in c)
        assert any(c.startswith("perf_analyzer -m ctr -u 127.0.0.1:") for c in commands)
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed: the printed commands cannot be run")
        reply = json.loads(
            subprocess.run(shlex.split(infer), capture_output=True, text=True, check=True).stdout
        )
        assert reply["model_name"] == "ctr"
        assert reply["model_version"] == "1"
        entries = json.loads(
            subprocess.run(shlex.split(index), capture_output=True, text=True, check=True).stdout
        )
        assert [(e["name"], e["version"], e["state"]) for e in entries] == [("ctr", "1", "READY")]
        assert "int8 onnxruntime engine by hit" in entries[0]["reason"]

        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, "".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    config_text = (work / "repo" / "ctr" / "config.yaml").read_text()
    config = parse_model_config(config_text, where="ctr/config.yaml")
    assert build_spec(config).precision == "int8"
    assert yaml.safe_load(config_text)["accuracy"]["validation_dir"] == "validation"
