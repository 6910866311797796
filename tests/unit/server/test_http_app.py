"""The REST application over a runtime of fake engines, driven in-process through httpx's ASGI
transport (no sockets): routes, statuses, error bodies, auth and limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import numpy as np
import pytest
from server_fakes import FakeControl, make_runtime

from kiln.server.auth import Authenticator
from kiln.server.config import ServerConfig
from kiln.server.core import ServerCore
from kiln.server.http.app import create_app

ACME = "acme-0123456789abcdef"
ADMIN = "admin-token-0123456789"
Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def run(
    scenario: Scenario, *, auth: Authenticator | None = None, config: ServerConfig | None = None
) -> ServerCore:
    control = FakeControl()
    control.set_state("pair", "1", "READY")
    control.set_state("text", "1", "READY")
    core = ServerCore(make_runtime("pair", "text"), control, config=config)
    core.mark_started()

    async def metrics(
        scope: object, receive: object, send: Callable[[dict[str, object]], Awaitable[None]]
    ) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"kiln_up 1\n"})

    app = create_app(core, auth, metrics_app=metrics)

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kiln") as client:
            await scenario(client)

    asyncio.run(main())
    return core


def pair_request(rows: int = 1, **extra: object) -> dict[str, object]:
    data = list(range(rows * 4))
    return {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [rows, 4], "data": data},
            {"name": "b", "datatype": "FP32", "shape": [rows, 4], "data": data},
        ],
        **extra,
    }


def test_health_metadata_config_stats_and_metrics() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.get("/v2")).json()["extensions"][0] == "binary_tensor_data"
        assert (await client.get("/v2/models/pair")).json()["outputs"][0]["name"] == "sum"
        assert (await client.get("/v2/models/pair/versions/1")).status_code == 200
        assert (await client.get("/v2/models/pair/ready")).json() == {"name": "pair", "ready": True}
        assert (await client.get("/v2/models/pair/versions/9/ready")).status_code == 400
        assert (await client.get("/v2/models/nope/ready")).status_code == 400
        assert (await client.get("/v2/models/pair/config")).json()["max_batch_size"] == 8
        stats = (await client.get("/v2/models/pair/versions/1/stats")).json()
        assert stats["model_stats"][0]["version"] == "1"
        assert len((await client.get("/v2/models/stats")).json()["model_stats"]) == 2
        assert (await client.get("/metrics")).text == "kiln_up 1\n"
        missing = await client.get("/v2/models/pair/infer")
        assert missing.status_code == 404
        assert "GET /v2/models/pair/infer" in missing.json()["error"]
        wrong_method = await client.delete("/v2/health/ready")
        assert wrong_method.status_code == 405
        assert "DELETE /v2/health/ready" in wrong_method.json()["error"]

    run(scenario)


def test_json_inference() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        body = pair_request(2, id="q1", outputs=[{"name": "sum"}])
        reply = await client.post("/v2/models/pair/infer", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/json"
        doc = reply.json()
        assert (doc["model_name"], doc["model_version"], doc["id"]) == ("pair", "1", "q1")
        assert doc["outputs"] == [
            {"name": "sum", "datatype": "FP32", "shape": [2, 4], "data": [float(2 * i) for i in range(8)]}
        ]
        versioned = await client.post("/v2/models/pair/versions/1/infer", json=pair_request())
        assert versioned.status_code == 200

    run(scenario)


def test_binary_inference_with_bytes_tensors() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        raw = b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "s",
                        "datatype": "BYTES",
                        "shape": [1, 2],
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        reply = await client.post(
            "/v2/models/text/infer",
            content=header + raw,
            headers={
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
        )
        assert reply.status_code == 200, reply.text
        length = int(reply.headers["inference-header-content-length"])
        doc = json.loads(reply.content[:length])
        assert doc["outputs"][0]["parameters"] == {"binary_data_size": len(raw)}
        assert reply.content[length:] == b"\x02\x00\x00\x00AB\x01\x00\x00\x00C"

    run(scenario)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/pair/infer", b"{oops", 400, "not valid JSON"),
        ("/v2/models/nope/infer", json.dumps(pair_request()).encode(), 404, "no model named 'nope'"),
        (
            "/v2/models/pair/versions/3/infer",
            json.dumps(pair_request()).encode(),
            404,
            "no ready version '3'",
        ),
        (
            "/v2/models/pair/infer",
            json.dumps(pair_request(parameters={"priority": 9})).encode(),
            400,
            "priority",
        ),
        ("/v2/models/pair/infer", json.dumps(pair_request(rows=9)).encode(), 400, "request holds 9 rows"),
    ],
)
def test_bad_requests_get_a_status_and_an_error_message(
    path: str, body: bytes, status: int, message: str
) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        reply = await client.post(path, content=body)
        assert reply.status_code == status
        assert message in reply.json()["error"]
        assert (await client.post("/v2/models/pair/infer", json=pair_request())).status_code == 200

    run(scenario)


def test_a_body_over_the_limit_gets_413() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        reply = await client.post("/v2/models/pair/infer", content=b" " * 5000)
        assert reply.status_code == 413
        assert "too large" in reply.json()["error"]
        assert "limit 2048" in reply.json()["error"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(2):
                yield b" " * 1500

        chunked = await client.post("/v2/models/pair/infer", content=chunks())
        assert chunked.status_code == 413
        assert "3000 bytes" in chunked.json()["error"]

    run(scenario, config=ServerConfig(max_request_bytes=2048))


def test_api_keys_and_admin_token() -> None:
    auth = Authenticator({ACME: "acme"}, ADMIN)

    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/v2/health/ready")).status_code == 200
        denied = await client.post("/v2/models/pair/infer", json=pair_request())
        assert denied.status_code == 401
        assert "missing API key" in denied.json()["error"]
        assert (
            await client.get("/v2/models/pair", headers={"x-api-key": "wrong-key-0123456789"})
        ).status_code == 401
        ok = await client.post("/v2/models/pair/infer", json=pair_request(), headers={"x-api-key": ACME})
        assert ok.status_code == 200
        bearer = {"authorization": f"Bearer {ACME}"}
        assert (await client.get("/v2/models/pair", headers=bearer)).status_code == 200
        assert (
            await client.post("/v2/repository/models/pair/unload", headers={"x-api-key": ACME})
        ).status_code == 401
        admin = {"x-api-key": ADMIN}
        assert (await client.post("/v2/repository/models/pair/unload", headers=admin)).status_code == 200
        assert (await client.get("/v2/admin/models/pair/status", headers=admin)).json()[
            "active_version"
        ] == "1"

    run(scenario, auth=auth)


def test_repository_endpoints() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        index = await client.post("/v2/repository/index", content=b"")
        assert [e["name"] for e in index.json()] == ["pair", "text"]
        assert (await client.post("/v2/repository/models/pair/load", json={})).json()[0]["state"] == "LOADING"
        unknown = await client.post("/v2/repository/models/nope/load")
        assert unknown.status_code == 404
        override = await client.post("/v2/repository/models/pair/load", json={"parameters": {"config": "{}"}})
        assert override.status_code == 501

    core = run(scenario)
    assert core.control is not None


def test_fault_injection_endpoints() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        reply = await client.post("/v2/admin/models/pair/faults", json={"fail_next": 2, "delay_ms": 1})
        assert reply.json()["faults"]["fail_next"] == 2
        bad = await client.post("/v2/admin/models/pair/faults", json={"fail_next": -1})
        assert bad.status_code == 400
        assert "fail_next" in bad.json()["error"]
        assert (await client.delete("/v2/admin/models/pair/faults")).json()["faults"] is None

    run(scenario)


def test_engine_failures_are_503_with_a_generic_message() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await client.post("/v2/admin/models/pair/faults", json={"fail_next": 10})
        reply = await client.post("/v2/models/pair/infer", json=pair_request())
        assert reply.status_code == 503
        assert "engine failed to run this request (error id" in reply.json()["error"]

    run(scenario)


def test_nan_in_json_is_a_400_naming_the_input() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        body = json.dumps(pair_request()).replace('"data": [0, 1', '"data": [NaN, 1', 1).encode()
        reply = await client.post(
            "/v2/models/pair/infer", content=body, headers={"Inference-Header-Content-Length": str(len(body))}
        )
        assert reply.status_code == 400
        assert "input 'a' holds NaN or Infinity" in reply.json()["error"]

    run(scenario)


def test_outputs_arrays_match_numpy() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        doc = (await client.post("/v2/models/pair/infer", json=pair_request(1))).json()
        diff = np.array(doc["outputs"][1]["data"], np.float32)
        np.testing.assert_array_equal(diff, np.zeros(4, np.float32))

    run(scenario)
