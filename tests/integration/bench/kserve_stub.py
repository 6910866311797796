"""A minimal KServe v2 server for the benchmark's client tests, on a free loopback port.

It speaks just enough of the protocol (HTTP with Triton's binary-tensor extension, and gRPC with
tritonclient's own service definition) for ``KServeTarget``: health, model metadata, repository
index, infer and statistics. Models: ``add`` (``y = x + 1`` on FP32 ``x[-1, 4]``) and ``broken``
(same signature, every infer fails with HTTP 500 / gRPC INTERNAL).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tritonclient.grpc import service_pb2, service_pb2_grpc

MODELS = ("add", "broken")
META_INPUTS = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
META_OUTPUTS = [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]


@dataclass
class Counters:
    success: int = 0
    fail: int = 0
    queue_ns: int = 0
    infer_ns: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ok: bool, infer_ns: int) -> None:
        with self.lock:
            if ok:
                self.success += 1
                self.queue_ns += 1000
                self.infer_ns += infer_ns
            else:
                self.fail += 1

    def stats(self, model: str) -> dict[str, object]:
        with self.lock:
            pair = {"count": self.success, "ns": self.infer_ns}
            return {
                "model_stats": [
                    {
                        "name": model,
                        "version": "1",
                        "inference_stats": {
                            "success": pair,
                            "fail": {"count": self.fail, "ns": 0},
                            "queue": {"count": self.success, "ns": self.queue_ns},
                            "compute_input": {"count": self.success, "ns": 0},
                            "compute_infer": pair,
                            "compute_output": {"count": self.success, "ns": 0},
                        },
                    }
                ]
            }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_app(counters: Counters) -> Starlette:
    async def live(request: Request) -> Response:
        return Response(status_code=200)

    async def metadata(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in MODELS:
            return JSONResponse({"error": f"unknown model '{name}'"}, status_code=404)
        return JSONResponse({"name": name, "versions": ["1"], "platform": "stub",
                             "inputs": META_INPUTS, "outputs": META_OUTPUTS})  # fmt: skip

    async def index(request: Request) -> Response:
        return JSONResponse([{"name": m, "version": "1", "state": "READY"} for m in MODELS])

    async def stats(request: Request) -> Response:
        return JSONResponse(counters.stats(request.path_params["name"]))

    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        header_length = int(request.headers.get("Inference-Header-Content-Length", len(body)))
        header = json.loads(body[:header_length])
        if name == "broken":
            counters.record(False, 0)
            return JSONResponse({"error": "stub: this model always fails"}, status_code=500)
        started = time.perf_counter_ns()
        tensor = header["inputs"][0]
        size = tensor.get("parameters", {}).get("binary_data_size")
        if size is not None:
            x = np.frombuffer(body[header_length : header_length + size], np.float32).reshape(tensor["shape"])
        else:
            x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
        y = x + 1
        counters.record(True, time.perf_counter_ns() - started)
        output = {"name": "y", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}
        return JSONResponse({"model_name": name, "outputs": [output]})

    return Starlette(
        routes=[
            Route("/v2/health/live", live),
            Route("/v2/models/{name}", metadata),
            Route("/v2/models/{name}/stats", stats),
            Route("/v2/models/{name}/infer", infer, methods=["POST"]),
            Route("/v2/repository/index", index, methods=["POST"]),
        ]
    )


class _Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    async def ServerLive(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return service_pb2.ServerLiveResponse(live=True)

    async def ModelMetadata(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        if request.name not in MODELS:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.name}'")
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=request.name, versions=["1"], platform="stub",
            inputs=[tensor(name="x", datatype="FP32", shape=[-1, 4])],
            outputs=[tensor(name="y", datatype="FP32", shape=[-1, 4])],
        )  # fmt: skip

    async def RepositoryIndex(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        entry = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(
            models=[entry(name=m, version="1", state="READY") for m in MODELS]
        )

    async def ModelInfer(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        if request.model_name == "broken":
            self.counters.record(False, 0)
            await context.abort(grpc.StatusCode.INTERNAL, "stub: this model always fails")
        started = time.perf_counter_ns()
        shape = list(request.inputs[0].shape)
        y = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(shape) + 1
        self.counters.record(True, time.perf_counter_ns() - started)
        out = service_pb2.ModelInferResponse.InferOutputTensor(name="y", datatype="FP32", shape=shape)
        return service_pb2.ModelInferResponse(
            model_name=request.model_name, outputs=[out], raw_output_contents=[y.tobytes()]
        )

    async def ModelStatistics(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        response = service_pb2.ModelStatisticsResponse()
        from google.protobuf import json_format

        json_format.ParseDict(self.counters.stats(request.name), response)
        return response


@contextmanager
def http_stub() -> Iterator[tuple[str, Counters]]:
    """A stub HTTP server on a free port: (``http://127.0.0.1:PORT``, its counters)."""
    counters = Counters()
    port = free_port()
    config = uvicorn.Config(
        _http_app(counters), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("the stub HTTP server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", counters
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def grpc_stub() -> Iterator[tuple[str, Counters]]:
    """A stub gRPC server on a free port: (``127.0.0.1:PORT``, its counters)."""
    counters = Counters()
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: list[asyncio.Event] = []

    async def serve() -> None:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(counters), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop.append(asyncio.Event())
        started.set()
        await stop[0].wait()
        await server.stop(0)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise TimeoutError("the stub gRPC server did not start")
    try:
        yield f"127.0.0.1:{port}", counters
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()
