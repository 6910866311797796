"""The reference server of ``benchmarks/server.py``: ONNX Runtime run once per request, inline in the
HTTP handler, no batching, no runtime, no metering; just enough KServe v2 for perf_analyzer
(server and model metadata, config, statistics, binary-tensor inference).

    python benchmarks/_plain_server.py MODEL.onnx --port 8000

With ``--bare`` it decodes each request and answers zeros without running the model: the
ceiling of this HTTP stack on the machine at the time of the run.

It is the "plain server" a user would write in an afternoon (uvicorn with uvloop and httptools,
orjson), so kiln's server can be compared with what serving without kiln costs on the same machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

NUMPY = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "FP16": np.float16}
DATATYPE = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(int32)": "INT32"}


class PlainServer:
    """One ONNX model behind KServe v2 HTTP, one ``session.run`` per request."""

    def __init__(self, model_path: str, name: str, *, bare: bool = False) -> None:
        self.bare = bare
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        self.name = name
        self.count = 0
        self.ns = 0
        self.metadata = orjson.dumps(
            {
                "name": name,
                "versions": ["1"],
                "platform": "onnxruntime_onnx",
                "inputs": [_tensor(t) for t in self.session.get_inputs()],
                "outputs": [_tensor(t) for t in self.session.get_outputs()],
            }
        )
        self.config = orjson.dumps({"name": name, "max_batch_size": 16, "backend": "onnxruntime"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.endswith("/infer"):
            await self._infer(scope, receive, send)
        elif path == "/v2":
            await _reply(send, 200, orjson.dumps({"name": "plain", "version": "1", "extensions": []}))
        elif path in ("/v2/health/ready", "/v2/health/live"):
            await _reply(send, 200, b"")
        elif path == f"/v2/models/{self.name}":
            await _reply(send, 200, self.metadata)
        elif path == f"/v2/models/{self.name}/config":
            await _reply(send, 200, self.config)
        elif path == f"/v2/models/{self.name}/stats":
            await _reply(send, 200, self._stats())
        else:
            await _reply(send, 404, b'{"error":"not found"}')

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        header_length = len(body)
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                header_length = int(value)
        header = orjson.loads(body[:header_length])
        offset = header_length
        feed = {}
        for tensor in header["inputs"]:
            dtype = NUMPY[tensor["datatype"]]
            size = tensor["parameters"]["binary_data_size"]
            raw = body[offset : offset + size]
            offset += size
            feed[tensor["name"]] = np.frombuffer(raw, dtype=dtype).reshape(tensor["shape"])
        nodes = self.session.get_outputs()
        if self.bare:
            rows = next(iter(feed.values())).shape[0]
            outputs = [np.zeros((rows, 1), np.float32) for _ in nodes]
        else:
            outputs = self.session.run([o.name for o in nodes], feed)
        self.count += 1
        blobs, described = [], []
        for node, value in zip(nodes, outputs, strict=True):
            blob = np.ascontiguousarray(value).tobytes()
            blobs.append(blob)
            described.append(
                {
                    "name": node.name,
                    "datatype": DATATYPE[node.type],
                    "shape": list(value.shape),
                    "parameters": {"binary_data_size": len(blob)},
                }
            )
        head = orjson.dumps({"model_name": self.name, "model_version": "1", "outputs": described})
        await _reply(send, 200, head + b"".join(blobs), len(head))

    def _stats(self) -> bytes:
        pair = {"count": self.count, "ns": self.ns}
        phases = ("success", "queue", "compute_input", "compute_infer", "compute_output")
        inference = dict.fromkeys(phases, pair)
        inference |= {"fail": {"count": 0, "ns": 0}}
        stats = {
            "name": self.name,
            "version": "1",
            "last_inference": 0,
            "inference_count": self.count,
            "execution_count": self.count,
            "inference_stats": inference,
            "batch_stats": [],
        }
        return orjson.dumps({"model_stats": [stats]})


def _tensor(node: Any) -> dict[str, Any]:
    shape = [d if isinstance(d, int) else -1 for d in node.shape]
    return {"name": node.name, "datatype": DATATYPE[node.type], "shape": shape}


async def _reply(send: Send, status: int, body: bytes, json_length: int | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if json_length is not None:
        headers.append((b"inference-header-content-length", str(json_length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("--name", default="ctr")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--bare", action="store_true", help="decode and answer, but run no model")
    args = parser.parse_args()
    app = PlainServer(args.model, args.name, bare=args.bare)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning")


if __name__ == "__main__":
    main()
