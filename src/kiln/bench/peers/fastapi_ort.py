"""The common hand-written deployment: FastAPI + ONNX Runtime, one session, one request per run.

:func:`create_fastapi_app` serves one model on the KServe v2 JSON routes ``kiln bench`` drives
(health, metadata, infer, repository index). The infer handler is a plain ``def``: FastAPI runs it
on its thread pool, so requests run concurrently on one shared session (ONNX Runtime allows it).
With ``optimized=False`` and ``serialize=True`` it is the ``unoptimized`` baseline served over HTTP:
fp32, graph optimizations off, one engine run at a time, no batching.
"""

# No ``from __future__ import annotations``: FastAPI reads the route annotations at run time.
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kiln.bench.peers.ort import create_session, run_session, signature
from kiln.bench.peers.v2json import (
    HEADER_LENGTH,
    decode_inputs,
    encode_outputs,
    error_body,
    model_config,
    model_metadata,
    server_metadata,
    split_binary,
)
from kiln.errors import InvalidInput


def create_fastapi_app(
    model: Path, name: str, *, optimized: bool = True, serialize: bool = False, intra_op_threads: int = 0
) -> Any:
    """A FastAPI app serving ``model`` as ``name`` (needs the ``peers`` extra)."""
    inputs, outputs = signature(model)
    session = create_session(model, optimized=optimized, intra_op_threads=intra_op_threads)
    guard: Any = threading.Lock() if serialize else nullcontext()
    app = FastAPI(title=f"{name} (FastAPI + ONNX Runtime)", docs_url=None, redoc_url=None)

    def unknown(model_name: str) -> JSONResponse:
        return JSONResponse(error_body(f"unknown model {model_name!r}; serving {name!r}"), status_code=404)

    @app.get("/v2")
    def server() -> dict[str, Any]:
        return server_metadata("fastapi-onnxruntime")

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    def health() -> dict[str, bool]:
        return {"live": True}

    @app.post("/v2/repository/index")
    def index() -> list[dict[str, str]]:
        return [{"name": name, "version": "1", "state": "READY"}]

    @app.get("/v2/models/{model_name}")
    @app.get("/v2/models/{model_name}/versions/{version}")
    def metadata(model_name: str, version: str = "1") -> Any:
        if model_name != name:
            return unknown(model_name)
        return model_metadata(name, inputs, outputs)

    @app.get("/v2/models/{model_name}/config")
    def config(model_name: str) -> Any:
        if model_name != name:
            return unknown(model_name)
        return model_config(name, inputs, outputs)

    @app.post("/v2/models/{model_name}/infer")
    @app.post("/v2/models/{model_name}/versions/{version}/infer")
    async def infer_route(model_name: str, request: Request, version: str = "1") -> Any:
        if model_name != name:
            return unknown(model_name)
        body = await request.body()
        header = request.headers.get(HEADER_LENGTH)
        return await run_in_threadpool(infer, body, None if header is None else int(header))

    def infer(body: bytes, header_length: int | None) -> Any:
        try:
            arrays = decode_inputs(split_binary(body, header_length), inputs)
        except InvalidInput as error:
            return JSONResponse(error_body(str(error)), status_code=400)
        with guard:
            result = run_session(session, arrays)
        return JSONResponse(encode_outputs(name, result))

    return app
