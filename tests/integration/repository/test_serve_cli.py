"""``kiln serve REPO`` as a real process: it prints where it listens and when it is ready, serves
the repository's models, picks up a published version, meters usage into ``REPO/.kiln/``,
exposes the repository's metrics, and exits 0 after draining on SIGTERM."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import tritonclient.grpc as grpcclient
from repo_harness import ctr_bytes, wait_for

from kiln.examples import get_example, make_samples
from kiln.metering.ledger_db import read_usage
from kiln.repository.layout import MODEL_FILE, STATE_DIR
from kiln.repository.publish import publish_version

KILN = [sys.executable, "-c", "from kiln.cli.main import main; main()"]


def next_line(lines: queue.Queue[str], prefix: str, seen: list[str]) -> str:
    while True:
        line = lines.get(timeout=120)
        seen.append(line)
        if line.startswith(prefix):
            return line


def test_kiln_serve_repo_serves_picks_up_versions_meters_and_drains(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=0)})
    args = ["serve", str(repo), "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"]
    args += ["--build-in", "thread", "--poll-interval-s", "0.1", "--cache-dir", str(tmp_path / "cache")]
    process = subprocess.Popen(
        [*KILN, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout or ()], daemon=True).start()
    seen: list[str] = []
    try:
        banner = next_line(lines, "kiln serving:", seen)
        match = re.search(r"http://([\d.]+:\d+).*gRPC ([\d.]+:\d+)", banner)
        assert match is not None, banner
        http, grpc = match.groups()
        assert next_line(lines, "kiln ready:", seen).strip() == "kiln ready: ctr 1"
        assert httpx.get(f"http://{http}/v2/health/ready").status_code == 200

        publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=1)})

        def version_2_ready() -> bool:
            index = httpx.post(f"http://{http}/v2/repository/index", json={"ready": True}).json()
            return [e["version"] for e in index] == ["2"]

        wait_for(version_2_ready, 60, "ctr/2 READY")
        reply = httpx.post(f"http://{http}/v2/models/ctr/infer", json={"inputs": json_inputs()})
        assert reply.status_code == 200, reply.text
        assert reply.json()["model_version"] == "2"
        client = grpcclient.InferenceServerClient(grpc)
        assert client.is_model_ready("ctr", "2")
        assert not client.is_model_ready("ctr", "1")
        client.close()

        metrics = httpx.get(f"http://{http}/metrics").text
        assert 'kiln_engine_cache_lookups_total{model="ctr",result="miss"} 1.0' in metrics
        assert 'kiln_engine_cache_lookups_total{model="ctr",result="refit"} 1.0' in metrics  # same structure
        assert 'kiln_model_load_duration_seconds_count{model="ctr"} 2.0' in metrics
        assert 'kiln_repository_version_state{model="ctr",state="READY",version="2"} 1.0' in metrics
        assert 'kiln_swaps_total{model="ctr"}' in metrics
        assert 'kiln_metered_requests_total{model="ctr",tenant="' in metrics

        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, "".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    usage = read_usage(repo / STATE_DIR / "usage.sqlite")
    assert {(k.model, k.version): u.requests for k, u in usage.items()} == {("ctr", "2"): 1}


def json_inputs() -> list[dict[str, object]]:
    samples = make_samples("ctr", 2, size="tiny", seed=3)
    return [
        {
            "name": s.name,
            "datatype": s.datatype,
            "shape": list(samples[s.name].shape),
            "data": samples[s.name].ravel().tolist(),
        }
        for s in get_example("ctr").inputs("tiny")
    ]
