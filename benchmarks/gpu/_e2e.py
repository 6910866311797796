"""End to end: the CTR model on the kiln torch engine served by kiln's server (KServe v2 over gRPC,
binary tensors), driven by perf_analyzer on the same host.

The server runs in its own process (``_serve_ctr.py`` beside this file, or ``--serve-cmd``, a
template with ``{work}``, ``{http_port}``, ``{grpc_port}`` and ``{ready_file}``): it builds the
engine, loads it into a runtime with dynamic batching and writes the ready file. perf_analyzer then
measures a grid of request batch sizes (``-b``: items per request) and concurrencies with real
samples (``--input-data`` JSON: random ids would fall outside the embedding tables). Every point is
recorded with its throughput in inferences (items) per second and its p50/p99 request latency.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _stages import Context

HERE = Path(__file__).resolve().parent
DEFAULT_SERVE = (
    f"{sys.executable} {HERE / '_serve_ctr.py'} --work {{work}} --http-port {{http_port}} "
    "--grpc-port {grpc_port} --ready-file {ready_file}"
)
GRID: tuple[tuple[int, tuple[int, ...]], ...] = (
    (1, (8,)),
    (32, (1, 2, 4)),
    (64, (1, 2, 4)),
    (128, (1, 2, 4)),
    (256, (1, 2, 3)),
    (512, (1, 2)),
)
"""(items per request, concurrencies) measured by perf_analyzer."""
SMOKE_GRID: tuple[tuple[int, tuple[int, ...]], ...] = ((1, (2,)), (8, (2,)))
P99_BOUND_MS = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def wait_ready(ready_file: Path, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready_file.is_file() and ready_file.stat().st_size > 0:
            return True
        time.sleep(0.5)
    return False


def perf_command(
    binary: str, grpc_port: int, inputs: Path, csv_path: Path, *, batch: int, concurrency: int, smoke: bool
) -> list[str]:
    return [
        binary, "-m", "ctr", "-u", f"127.0.0.1:{grpc_port}", "-i", "grpc",
        "--input-tensor-format", "binary", "--output-tensor-format", "binary",
        "-b", str(batch), "--input-data", str(inputs),
        "--concurrency-range", str(concurrency), "--percentile=99",
        "--measurement-interval", "1000" if smoke else "3000",
        "--stability-percentage", "999", "--max-trials", "3",
        "-f", str(csv_path),
    ]  # fmt: skip


def measure(ctx: Context, binary: str, grpc_port: int, inputs: Path) -> None:
    for batch, concurrencies in SMOKE_GRID if ctx.smoke else GRID:
        for concurrency in concurrencies:
            csv_path = ctx.work / f"perf-b{batch}-c{concurrency}.csv"
            command = perf_command(
                binary, grpc_port, inputs, csv_path, batch=batch, concurrency=concurrency, smoke=ctx.smoke
            )
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            ctx.log(f"--- perf_analyzer -b {batch} concurrency {concurrency}\n{done.stdout[-1500:]}")
            if done.returncode != 0 or not csv_path.is_file():
                ctx.record(
                    "e2e",
                    step="perf_analyzer",
                    batch=batch,
                    concurrency=concurrency,
                    ok=False,
                    rc=done.returncode,
                    output=(done.stdout + done.stderr)[-600:],
                )
                continue
            for row in parse_csv(csv_path):
                ctx.record(
                    "e2e-timing",
                    model="ctr",
                    variant="kiln server (gRPC binary, perf_analyzer)",
                    scope=f"{batch} items/request, concurrency {row['concurrency']}",
                    batch=batch,
                    concurrency=row["concurrency"],
                    median_ms=row["p50_ms"],
                    p99_ms=row["p99_ms"],
                    items_per_s=row["items_per_s"],
                )


def stop(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


def run(ctx: Context, serve_cmd: str | None, perf_analyzer: str | None = None) -> None:
    """Start the server, wait until READY, measure the grid, stop the server (SIGTERM: a drain)."""
    binary = perf_analyzer or os.environ.get("KILN_PERF_ANALYZER", "perf_analyzer")
    size = "tiny" if ctx.smoke else "full"
    inputs = write_inputs(ctx.work / "inputs.json", size)
    http_port, grpc_port = free_port(), free_port()
    ready_file = ctx.work / "ready.json"
    template = serve_cmd or DEFAULT_SERVE
    if ctx.smoke:
        template += " --size tiny --buckets 1,8,16 --max-batch 16"
    command = shlex.split(
        template.format(
            work=ctx.work / "server", http_port=http_port, grpc_port=grpc_port, ready_file=ready_file
        )
    )
    ctx.record("e2e", step="serve", command=" ".join(command))
    log_path = ctx.work / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if not wait_ready(ready_file, server, 300):
                ctx.record("e2e", step="ready", ok=False, rc=server.poll())
                return
            ctx.record("e2e", step="ready", ok=True, **json.loads(ready_file.read_text()))
            measure(ctx, binary, grpc_port, inputs)
        finally:
            stop(server)
            ctx.record("e2e", step="server exit", rc=server.returncode)
            ctx.log(log_path.read_text(errors="replace")[-4000:])
    best = best_point(ctx)
    if best is not None:
        ctx.record("e2e", step=f"best at p99 <= {P99_BOUND_MS} ms", **best)


def best_point(ctx: Context) -> dict[str, Any] | None:
    from _record import read_records

    rows = [
        r
        for r in read_records(ctx.out)
        if r["kind"] == "e2e-timing" and r["stage"] == ctx.stage and r["p99_ms"] <= P99_BOUND_MS
    ]
    if not rows:
        return None
    top = max(rows, key=lambda r: r["items_per_s"])
    return {k: top[k] for k in ("batch", "concurrency", "items_per_s", "median_ms", "p99_ms")}
