"""End to end: ``kiln serve`` with the CTR model on the torch backend, driven by perf_analyzer over
gRPC (binary tensors), on the same host.

The stage writes a model repository (``<work>/repo/ctr/config.yaml`` from ``ctr_config.yaml`` beside
this file, and ``<work>/repo/ctr/1/model.onnx``), starts the server from ``--serve-cmd`` (a template
with ``{repo}``, ``{http_port}`` and ``{grpc_port}``), waits for ``/v2/health/ready``, runs
perf_analyzer at rising concurrency with real samples (``--input-data`` JSON: random ids would fall
outside the embedding tables), records every row of its CSV, and stops the server.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from _stages import Context

HERE = Path(__file__).resolve().parent
DEFAULT_SERVE = "kiln serve --model-repository {repo} --http-port {http_port} --grpc-port {grpc_port}"
CONCURRENCY = "8:128:8"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_repository(root: Path, size: str) -> Path:
    """``root/ctr/config.yaml`` and ``root/ctr/1/model.onnx``; returns ``root``."""
    from kiln.examples import build_model

    folder = root / "ctr"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text((HERE / "ctr_config.yaml").read_text())
    build_model("ctr", folder / "1" / "model.onnx", size=size)
    return root


def write_inputs(path: Path, size: str, count: int = 512) -> Path:
    """perf_analyzer's ``--input-data`` JSON: ``count`` real CTR samples (shapes without the batch
    axis, which ``-b`` adds)."""
    from kiln.examples import make_samples

    samples = make_samples("ctr", count, kind="validation", size=size)
    data = [
        {
            "dense": {"content": samples["dense"][i].tolist(), "shape": [13]},
            "sparse": {"content": samples["sparse"][i].tolist(), "shape": [26]},
        }
        for i in range(count)
    ]
    path.write_text(json.dumps({"data": data}))
    return path


def parse_csv(path: Path) -> list[dict[str, Any]]:
    """perf_analyzer's ``-f`` CSV: one row per concurrency, latencies in microseconds."""
    rows = []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            rows.append(
                {
                    "concurrency": int(float(row["Concurrency"])),
                    "items_per_s": float(row["Inferences/Second"]),
                    "p50_ms": float(row.get("p50 latency", 0)) / 1e3,
                    "p99_ms": float(row.get("p99 latency", 0)) / 1e3,
                }
            )
    return rows


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1.0)
    return False


def perf_command(binary: str, grpc_port: int, inputs: Path, csv_path: Path, concurrency: str) -> list[str]:
    return [
        binary,
        "-m",
        "ctr",
        "-u",
        f"127.0.0.1:{grpc_port}",
        "-i",
        "grpc",
        "-b",
        "1",
        "--input-data",
        str(inputs),
        "--concurrency-range",
        concurrency,
        "--percentile=99",
        "--measurement-interval",
        "3000",
        "--stability-percentage",
        "20",
        "-f",
        str(csv_path),
    ]


def run(ctx: Context, serve_cmd: str | None, perf_analyzer: str = "perf_analyzer") -> None:
    size = "tiny" if ctx.smoke else "full"
    repo = write_repository(ctx.work / "repo", size)
    inputs = write_inputs(ctx.work / "inputs.json", size)
    http_port, grpc_port = free_port(), free_port()
    template = serve_cmd or DEFAULT_SERVE
    command = shlex.split(template.format(repo=repo, http_port=http_port, grpc_port=grpc_port))
    ctx.record("e2e", step="serve", command=" ".join(command))
    log = (ctx.work / "server.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_ready(http_port, server, 300):
            ctx.record("e2e", step="ready", ok=False, rc=server.poll())
            return
        ctx.record("e2e", step="ready", ok=True)
        csv_path = ctx.work / "perf.csv"
        concurrency = "1:8:4" if ctx.smoke else CONCURRENCY
        done = subprocess.run(
            perf_command(perf_analyzer, grpc_port, inputs, csv_path, concurrency),
            capture_output=True,
            text=True,
            timeout=360,
            check=False,
        )
        ctx.log(done.stdout[-4000:] + done.stderr[-2000:])
        if done.returncode != 0 or not csv_path.is_file():
            ctx.record("e2e", step="perf_analyzer", ok=False, rc=done.returncode, output=done.stderr[-500:])
            return
        for row in parse_csv(csv_path):
            ctx.record(
                "e2e-timing",
                model="ctr",
                variant="kiln serve (gRPC, perf_analyzer)",
                scope=f"concurrency {row['concurrency']}, batch 1 per request",
                batch=1,
                median_ms=row["p50_ms"],
                p99_ms=row["p99_ms"],
                items_per_s=row["items_per_s"],
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        ctx.log((ctx.work / "server.log").read_text(errors="replace")[-4000:])
