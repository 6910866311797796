"""End to end: the CTR model served by ``kiln serve REPO`` (KServe v2 over gRPC, binary tensors),
driven by perf_analyzer on the same host, then hot swaps under that load.

The stage writes a model repository (``repo/ctr/config.yaml`` choosing the torch backend, version 1
published with :func:`kiln.repository.publish.publish_version`) and starts the real server in its
own process: ``python -m kiln serve REPO`` (or ``--serve-cmd``, a template with ``{repo}``,
``{http_port}``, ``{grpc_port}`` and ``{cache_dir}``). The server builds the engine through its
engine cache, loads it and serves it; the stage waits for ``/v2/models/ctr/ready``.

perf_analyzer then measures a grid of request batch sizes (``-b``: items per request) and
concurrencies with real samples (``--input-data`` JSON: random ids would fall outside the embedding
tables). Every point is recorded with its throughput in inferences (items) per second and its
p50/p99 request latency.

Hot swaps: while one perf_analyzer run keeps a fixed load on the server, a weight-only new version
(same graph, other weights) is published into the repository, and then another. The server picks
each up, obtains its engine from the cache (``refit`` expected: same structure, new weights),
loads it and swaps. Recorded per swap: the build path and its time (from ``/metrics``), the
swap window (publish until the new version is the only one READY), and for the whole run the
requests perf_analyzer completed, the requests the server failed (``kiln_requests_total`` by
outcome) and the p99 latency of the requests that started inside a swap window against the rest
(perf_analyzer's per-request ``--profile-export-file``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _stages import Context

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"
DEFAULT_SERVE = (
    f"{sys.executable} -m kiln serve {{repo}} --host 127.0.0.1 --http-port {{http_port}} "
    "--grpc-port {grpc_port} --cache-dir {cache_dir} --poll-interval-s 0.5 --settle-s 0.5"
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
SWAP_LOAD = (256, 2)
"""(items per request, concurrency) of the load kept on the server while versions are swapped."""
SWAPS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def model_config_yaml(*, buckets: str, max_batch: int, instances: int, delay_us: int) -> str:
    """``repo/ctr/config.yaml``: the torch backend in fp32, one CUDA graph per bucket."""
    preferred = [int(b) for b in buckets.split(",") if int(b) > 1]
    return (
        "backend: torch\n"
        "precision: fp32\n"
        f"max_batch_size: {max_batch}\n"
        f'backend_options:\n  buckets: "{buckets}"\n'
        "batching:\n"
        f"  max_queue_delay_us: {delay_us}\n"
        f"  preferred_batch_sizes: {preferred}\n"
        f"instances:\n  count: {instances}\n"
    )


def write_repository(root: Path, size: str, *, smoke: bool) -> Path:
    """A repository holding the CTR model (version 1) with its ``config.yaml``."""
    from kiln.examples import build_model
    from kiln.repository.publish import publish_version

    buckets, max_batch = ("1,8,16", 16) if smoke else ("1,64,256,1024", 1024)
    (root / "ctr").mkdir(parents=True, exist_ok=True)
    (root / "ctr" / "config.yaml").write_text(
        model_config_yaml(buckets=buckets, max_batch=max_batch, instances=2, delay_us=200)
    )
    onnx = build_model("ctr", root.parent / "ctr-v1.onnx", size=size, seed=0)
    publish_version(root, "ctr", {"model.onnx": onnx}, version="1", tag="benchmark v1")
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


def http_get(port: int, path: str, *, method: str = "GET", timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if method == "POST":
        request.data = b"{}"
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (OSError, urllib.error.URLError):
        return 0, ""


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout_s: float, path: str) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if http_get(port, path)[0] == 200:
            return True
        time.sleep(0.25)
    return False


def ready_versions(port: int) -> list[str]:
    """Versions of ``ctr`` the repository index reports READY."""
    status, body = http_get(port, "/v2/repository/index", method="POST")
    if status != 200:
        return []
    return sorted(
        str(e.get("version"))
        for e in json.loads(body)
        if e.get("name") == "ctr" and str(e.get("state", "")).upper() == "READY"
    )


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` of the server: (family sample name, labels) -> value, kiln's own samples only."""
    status, body = http_get(port, "/metrics")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    if status != 200:
        return samples
    for line in body.splitlines():
        match = _SAMPLE.match(line)
        if match is None or not match["name"].startswith("kiln_"):
            continue
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match["labels"])))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def metric_delta(
    before: dict[Any, float], after: dict[Any, float], name: str
) -> dict[tuple[tuple[str, str], ...], float]:
    """Per label set, how much sample ``name`` grew between two scrapes (non-zero changes only)."""
    out = {}
    for (sample, labels), value in after.items():
        if sample == name:
            grew = value - before.get((sample, labels), 0.0)
            if grew:
                out[labels] = grew
    return out


def perf_command(
    binary: str,
    grpc_port: int,
    inputs: Path,
    csv_path: Path,
    *,
    batch: int,
    concurrency: int,
    interval_ms: int,
    trials: int = 3,
) -> list[str]:
    return [
        binary, "-m", "ctr", "-u", f"127.0.0.1:{grpc_port}", "-i", "grpc",
        "--input-tensor-format", "binary", "--output-tensor-format", "binary",
        "-b", str(batch), "--input-data", str(inputs),
        "--concurrency-range", str(concurrency), "--percentile=99",
        "--measurement-interval", str(interval_ms),
        "--stability-percentage", "999", "--max-trials", str(trials),
        "-f", str(csv_path),
    ]  # fmt: skip


def measure(ctx: Context, binary: str, grpc_port: int, inputs: Path) -> None:
    for batch, concurrencies in SMOKE_GRID if ctx.smoke else GRID:
        for concurrency in concurrencies:
            csv_path = ctx.work / f"perf-b{batch}-c{concurrency}.csv"
            command = perf_command(
                binary,
                grpc_port,
                inputs,
                csv_path,
                batch=batch,
                concurrency=concurrency,
                interval_ms=1000 if ctx.smoke else 3000,
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
                    variant="kiln serve (gRPC binary, perf_analyzer)",
                    scope=f"{batch} items/request, concurrency {row['concurrency']}",
                    batch=batch,
                    concurrency=row["concurrency"],
                    median_ms=row["p50_ms"],
                    p99_ms=row["p99_ms"],
                    items_per_s=row["items_per_s"],
                )


def request_latencies(export: Path) -> list[tuple[int, float]]:
    """(start ns since the epoch, latency ms) of every request in perf_analyzer's profile export."""
    data = json.loads(export.read_text())
    out = []
    for experiment in data.get("experiments", []):
        for request in experiment.get("requests", []):
            start = int(request["timestamp"])
            responses = request.get("response_timestamps") or []
            if responses:
                out.append((start, (int(responses[-1]) - start) / 1e6))
    return out


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)


def one_swap(ctx: Context, repo: Path, http_port: int, number: int, size: str) -> tuple[int, int] | None:
    """Publish version ``number`` (new weights, same graph) and wait until it alone is READY.
    Returns the swap window as (start, end) ns since the epoch, or None if it never completed."""
    from kiln.examples import build_model
    from kiln.repository.publish import publish_version

    onnx = build_model("ctr", repo.parent / f"ctr-v{number}.onnx", size=size, seed=number)
    before = scrape(http_port)
    start = time.time_ns()
    publish_version(repo, "ctr", {"model.onnx": onnx}, version=str(number), tag=f"weights v{number}")
    deadline = time.monotonic() + 120
    done = False
    while time.monotonic() < deadline:
        if ready_versions(http_port) == [str(number)]:
            done = True
            break
        time.sleep(0.05)
    end = time.time_ns()
    after = scrape(http_port)
    paths = metric_delta(before, after, "kiln_engine_build_duration_seconds_count")
    seconds = metric_delta(before, after, "kiln_engine_build_duration_seconds_sum")
    ctx.record(
        "e2e-swap",
        model="ctr-swap",
        what=f"version {number} published under load",
        ok=done,
        seconds=round((end - start) / 1e9, 3),
        build_paths=sorted(dict(k).get("path", "?") for k in paths),
        build_seconds=round(sum(seconds.values()), 3),
        load_seconds=round(
            sum(metric_delta(before, after, "kiln_model_load_duration_seconds_sum").values()), 3
        ),
    )
    return (start, end) if done else None


def hot_swaps(ctx: Context, binary: str, inputs: Path, repo: Path, *, grpc_port: int, http_port: int) -> None:
    """Swap ``SWAPS`` weight-only versions in while perf_analyzer keeps ``SWAP_LOAD`` on the server."""
    batch, concurrency = (8, 2) if ctx.smoke else SWAP_LOAD
    size = "tiny" if ctx.smoke else "full"
    export = ctx.work / "swap-requests.json"
    csv_path = ctx.work / "perf-swap.csv"
    interval_ms = 2000 if ctx.smoke else 4000
    seconds = interval_ms / 1000 * (2 + 2 * SWAPS)
    # One measurement of a fixed number of requests (no stability rule: the swaps are the point),
    # sized from the grid's throughput at this load to last about ``seconds``.
    requests = int(seconds * grid_rate(ctx, batch, concurrency, default=200.0))
    command = perf_command(
        binary,
        grpc_port,
        inputs,
        csv_path,
        batch=batch,
        concurrency=concurrency,
        interval_ms=interval_ms,
        trials=1,
    )
    command += ["--request-count", str(requests), "--profile-export-file", str(export)]
    before = scrape(http_port)
    windows = []
    with (ctx.work / "perf-swap.log").open("wb") as log:
        load = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(interval_ms / 1000)  # a steady stretch before the first swap
            for number in range(2, 2 + SWAPS):
                window = one_swap(ctx, repo, http_port, number, size)
                if window is not None:
                    windows.append(window)
                time.sleep(interval_ms / 1000)
            rc = load.wait(timeout=seconds * 4 + 60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
    after = scrape(http_port)
    outcomes = {
        dict(k).get("outcome", "?"): v
        for k, v in metric_delta(before, after, "kiln_requests_total").items()
        if dict(k).get("model") == "ctr"
    }
    ctx.log(
        "--- perf_analyzer under swaps\n" + (ctx.work / "perf-swap.log").read_text(errors="replace")[-3000:]
    )
    latencies = request_latencies(export) if export.is_file() else []
    inside = [ms for at, ms in latencies if any(s <= at <= e for s, e in windows)]
    outside = [ms for at, ms in latencies if not any(s <= at <= e for s, e in windows)]
    ctx.record(
        "e2e-swap",
        model="ctr-swap",
        what=f"{len(windows)} of {SWAPS} swaps under {batch} items/request, concurrency {concurrency}",
        perf_analyzer_rc=rc,
        requests_asked=requests,
        requests_exported=len(latencies),
        server_outcomes=outcomes,
        failed=int(sum(v for k, v in outcomes.items() if k != "success")),
        swap_window_requests=len(inside),
        swap_window_p99_ms=p99(inside),
        steady_requests=len(outside),
        steady_p99_ms=p99(outside),
        swap_window_max_ms=round(max(inside), 3) if inside else None,
    )


def grid_rate(ctx: Context, batch: int, concurrency: int, *, default: float) -> float:
    """Requests per second the grid measured at (batch, concurrency), or ``default``."""
    from _record import read_records

    for r in read_records(ctx.out):
        if r["kind"] == "e2e-timing" and r["batch"] == batch and r["concurrency"] == concurrency:
            return float(r["items_per_s"]) / batch
    return default


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        server.wait(10)
        return
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(ctx: Context, serve_cmd: str | None, perf_analyzer: str | None = None) -> None:
    """Write the repository, start ``kiln serve``, wait until the model is READY, measure the grid,
    swap versions under load, stop the server (SIGTERM: a drain). If the server exits before READY,
    its log goes into the results and it is started once more with ``--build-in thread``."""
    binary = perf_analyzer or os.environ.get("KILN_PERF_ANALYZER", "perf_analyzer")
    size = "tiny" if ctx.smoke else "full"
    inputs = write_inputs(ctx.work / "inputs.json", size)
    repo = write_repository(ctx.work / "repo", size, smoke=ctx.smoke)
    template = serve_cmd or DEFAULT_SERVE
    for attempt, extra in enumerate(("", " --build-in thread")):
        if serve(ctx, template + extra, repo, inputs, binary, attempt=attempt):
            break
    best = best_point(ctx)
    if best is not None:
        ctx.record("e2e", step=f"best at p99 <= {P99_BOUND_MS} ms", **best)


def serve(ctx: Context, template: str, repo: Path, inputs: Path, binary: str, *, attempt: int) -> bool:
    """One server process: False when it never became READY."""
    http_port, grpc_port = free_port(), free_port()
    command = shlex.split(
        template.format(
            repo=repo, http_port=http_port, grpc_port=grpc_port, cache_dir=ctx.work / "engine-cache"
        )
    )
    config = (repo / "ctr" / "config.yaml").read_text().strip().replace("\n", "; ")
    ctx.record("e2e", step="serve", attempt=attempt, command=" ".join(command), config=config)
    log_path = ctx.work / f"server-{attempt}.log"
    started = time.perf_counter()
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=server_env(),
            cwd=ctx.work,
        )
        try:
            if not wait_ready(http_port, server, 400, "/v2/models/ctr/ready"):
                tail = log_path.read_text(errors="replace")[-1500:]
                ctx.record("e2e", step="ready", ok=False, rc=server.poll(), server_log=tail)
                return False
            metrics = scrape(http_port)
            build = metric_delta({}, metrics, "kiln_engine_build_duration_seconds_sum")
            ctx.record(
                "e2e",
                step="ready",
                ok=True,
                seconds=round(time.perf_counter() - started, 2),
                builds={dict(k).get("path", "?"): round(v, 2) for k, v in build.items()},
            )
            measure(ctx, binary, grpc_port, inputs)
            hot_swaps(ctx, binary, inputs, repo, grpc_port=grpc_port, http_port=http_port)
        finally:
            stop(server)
            ctx.record("e2e", step="server exit", rc=server.returncode)
            ctx.log(log_path.read_text(errors="replace")[-6000:])
    return True


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
