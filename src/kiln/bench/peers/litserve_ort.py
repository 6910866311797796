"""LitServe + ONNX Runtime with LitServe's dynamic batching on: the batching peer.

:class:`OrtLitAPI` decodes a v2 JSON request into arrays, LitServe gathers up to
``max_batch_size`` requests (waiting at most ``batch_timeout_s``) in its inference worker process,
:meth:`OrtLitAPI.batch` concatenates them on the batch axis, one ONNX Runtime run serves them all,
and the rows are split back per request. :func:`run_litserve` adds the KServe v2 health, metadata
and index routes to LitServe's app so that ``kiln bench`` drives it like any v2 server.
"""

# No ``from __future__ import annotations``: LitServe reads decode_request's annotation at run time.
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
from starlette.requests import Request

from kiln.bench.peers.ort import create_session, run_session, signature
from kiln.bench.peers.v2json import (
    HEADER_LENGTH,
    decode_inputs,
    encode_outputs,
    model_config,
    model_metadata,
    server_metadata,
    split_binary,
)
from kiln.errors import InvalidInput
from kiln.types import Array

try:
    import litserve as ls  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - the ``peers`` extra is not installed
    ls = None

_Base: Any = ls.LitAPI if ls is not None else object


class OrtLitAPI(_Base):  # type: ignore[misc]
    """One ONNX Runtime session (graph optimizations on) behind LitServe's batching loop."""

    def __init__(self, model: Path, name: str, *, max_batch_size: int, batch_timeout_s: float) -> None:
        super().__init__(
            max_batch_size=max_batch_size, batch_timeout=batch_timeout_s, api_path=f"/v2/models/{name}/infer"
        )
        self.model_path = Path(model)
        self.name = name

    def setup(self, device: str) -> None:
        self.inputs, _ = signature(self.model_path)
        self.session = create_session(self.model_path, optimized=True)

    def decode_request(self, request: Request, **kwargs: Any) -> dict[str, Array]:
        try:
            return decode_inputs(request, self.inputs)  # LitServe passes the JSON body, not the request
        except InvalidInput as error:
            from fastapi import HTTPException  # noqa: PLC0415

            raise HTTPException(status_code=400, detail=str(error)) from None

    def batch(self, inputs: list[dict[str, Array]]) -> tuple[dict[str, Array], list[int]]:
        rows = [len(next(iter(request.values()))) for request in inputs]
        joined = {name: np.concatenate([r[name] for r in inputs]) for name in inputs[0]}
        return joined, rows

    def predict(self, x: Any, **kwargs: Any) -> Any:
        if isinstance(x, tuple):  # a batch: (joined arrays, rows per request)
            joined, rows = x
            outputs = run_session(self.session, joined)
            bounds = np.cumsum([0, *rows])
            return [
                {name: value[bounds[i] : bounds[i + 1]] for name, value in outputs.items()}
                for i in range(len(rows))
            ]
        return run_session(self.session, x)

    def unbatch(self, output: Any) -> Any:
        return output

    def encode_response(self, output: Any, **kwargs: Any) -> dict[str, Any]:
        return encode_outputs(self.name, output)


class BinaryToJson:
    """ASGI middleware: a request in the binary-tensor extension becomes a JSON request carrying
    each input's bytes in base64 (``raw_b64``), since LitServe hands ``decode_request`` the JSON."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        length = headers.get(HEADER_LENGTH.lower().encode())
        if length is None:
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = split_binary(body, int(length))
        for entry in request.get("inputs", []):
            if "raw" in entry:
                entry["raw_b64"] = base64.b64encode(entry.pop("raw")).decode()
        new_body = json.dumps(request).encode()
        kept = [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"content-type")]
        kept += [(b"content-length", str(len(new_body)).encode()), (b"content-type", b"application/json")]
        kept = [(k, v) for k, v in kept if k != HEADER_LENGTH.lower().encode()]
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": new_body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": kept}, replay, send)


def run_litserve(
    model: Path, name: str, *, port: int, max_batch_size: int = 32, batch_timeout_s: float = 0.002
) -> None:
    """Serve ``model`` as ``name`` on ``127.0.0.1:port`` until the process is stopped."""
    if ls is None:
        raise ImportError("litserve is not installed: pip install 'kiln[peers]'")
    api = OrtLitAPI(model, name, max_batch_size=max_batch_size, batch_timeout_s=batch_timeout_s)
    server = ls.LitServer(
        api, accelerator="cpu", devices=1, workers_per_device=1, timeout=60, middlewares=[BinaryToJson]
    )
    inputs, outputs = signature(model)
    meta = model_metadata(name, inputs, outputs)
    triton_config = model_config(name, inputs, outputs)

    async def health() -> dict[str, bool]:
        return {"live": True}

    async def metadata(model_name: str) -> Any:
        from fastapi.responses import JSONResponse  # noqa: PLC0415

        if model_name != name:
            return JSONResponse({"error": f"unknown model {model_name!r}"}, status_code=404)
        return meta

    async def config(model_name: str) -> Any:
        return triton_config if model_name == name else await metadata(model_name)

    async def index() -> list[dict[str, str]]:
        return [{"name": name, "version": "1", "state": "READY"}]

    async def server_meta() -> dict[str, Any]:
        return server_metadata("litserve-onnxruntime")

    server.app.add_api_route("/v2", server_meta, methods=["GET"])
    server.app.add_api_route("/v2/health/live", health, methods=["GET"])
    server.app.add_api_route("/v2/health/ready", health, methods=["GET"])
    server.app.add_api_route("/v2/models/{model_name}", metadata, methods=["GET"])
    server.app.add_api_route("/v2/models/{model_name}/config", config, methods=["GET"])
    server.app.add_api_route("/v2/repository/index", index, methods=["POST"])
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False,
               num_api_servers=1)  # fmt: skip
