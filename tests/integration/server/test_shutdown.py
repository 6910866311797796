"""Graceful shutdown of a real server process: on SIGTERM it stops admitting (503, not ready),
finishes every request in flight, closes gRPC and HTTP and exits 0."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient

SCRIPT = Path(__file__).with_name("serve_slow.py")
BODY = json.dumps(
    {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
            {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
        ]
    }
).encode()


def read_lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def wait_for(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def infer_http(port: int) -> tuple[int, list[float]]:
    reply = httpx.post(f"http://127.0.0.1:{port}/v2/models/pair/infer", content=BODY, timeout=60)
    return reply.status_code, reply.json()["outputs"][0]["data"]


def infer_grpc(port: int) -> np.ndarray:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    tensors = [grpcclient.InferInput(name, [1, 4], "FP32") for name in ("a", "b")]
    for tensor in tensors:
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    return client.infer("pair", tensors).as_numpy("sum")


def test_sigterm_drains_requests_in_flight_and_exits_0(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        cwd=SCRIPT.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        line = lines.get(timeout=120)
        while not line.startswith("READY"):
            line = lines.get(timeout=120)
        http_port, grpc_port = (int(p) for p in line.split()[1:])
        status_url = f"http://127.0.0.1:{http_port}/v2/admin/models/pair/status"

        def admitted() -> bool:
            status = httpx.get(status_url).json()
            return status["queue_size"] + status["running_batches"] == 4

        with ThreadPoolExecutor(4) as pool:
            http_calls = [pool.submit(infer_http, http_port) for _ in range(3)]
            grpc_call = pool.submit(infer_grpc, grpc_port)
            wait_for(admitted, 30, "4 requests in flight")
            process.send_signal(signal.SIGTERM)

            ready = httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready")
            assert ready.status_code == 400
            assert ready.json() == {"ready": False, "reason": "shutting down"}
            refused = httpx.post(f"http://127.0.0.1:{http_port}/v2/models/pair/infer", content=BODY)
            assert refused.status_code == 503
            assert "shutting down" in refused.json()["error"]

            for call in http_calls:
                assert call.result(60) == (200, [2.0, 3.0, 4.0, 5.0])
            np.testing.assert_array_equal(grpc_call.result(60), np.full((1, 4), 2.0, np.float32))
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
