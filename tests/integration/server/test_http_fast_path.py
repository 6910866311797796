"""kiln's HTTP protocol on the wire: inference served off the parser, everything else through the
ASGI app, over raw sockets (keep-alive, pipelining, Connection: close, chunked bodies, size limits,
malformed requests, clients that leave), and the same answers as the ASGI app's own route."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from raw_http import RawClient, RawReply, chunked, request
from server_harness import Factories, Served, free_config, start_served

from kiln.server.http.app import create_app

INFER = "/v2/models/pair/infer"


def pair_json(a: list[float], b: list[float] | None = None, **extra: object) -> bytes:
    b = b if b is not None else [1.0] * len(a)
    return json.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [1, len(a)], "data": a},
                {"name": "b", "datatype": "FP32", "shape": [1, len(b)], "data": b},
            ],
            **extra,
        }
    ).encode()


def pair_binary(a: np.ndarray, b: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": list(a.shape),
                    "parameters": {"binary_data_size": a.nbytes},
                },
                {
                    "name": "b",
                    "datatype": "FP32",
                    "shape": list(b.shape),
                    "parameters": {"binary_data_size": b.nbytes},
                },
            ],
            "outputs": [{"name": "sum", "parameters": {"binary_data": True}}, {"name": "diff"}],
        }
    ).encode()
    return header + a.tobytes() + b.tobytes(), {"inference-header-content-length": str(len(header))}


def sum_of(reply: RawReply) -> list[float]:
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert isinstance(doc, dict)
    return [float(x) for x in doc["outputs"][0]["data"]]


@pytest.fixture(scope="module")
def limited(factories: Factories) -> Iterator[Served]:
    running = start_served(factories, free_config(max_request_bytes=4096))
    yield running
    running.server.stop()


def test_binary_inference_answers_with_binary_and_json_outputs(served: Served) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, headers = pair_binary(a, np.ones((2, 4), np.float32))
    with RawClient(served.http) as client:
        client.send(request("POST", INFER, body, headers))
        reply = client.reply()
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/octet-stream"
    length = int(reply.headers["inference-header-content-length"])
    header = json.loads(reply.body[:length])
    assert header["model_name"] == "pair"
    assert header["model_version"] == "1"
    total = np.frombuffer(reply.body[length:], np.float32).reshape(2, 4)
    np.testing.assert_array_equal(total, a + 1)
    assert header["outputs"][1]["data"] == (a - 1).reshape(-1).tolist()
    assert "date" in reply.headers


def test_json_inference_and_a_versioned_path(served: Served) -> None:
    with RawClient(served.http) as client:
        client.send(request("POST", INFER, pair_json([1, 2, 3, 4])))
        assert sum_of(client.reply()) == [2, 3, 4, 5]
        client.send(request("POST", "/v2/models/pair/versions/1/infer", pair_json([5, 6, 7, 8])))
        reply = client.reply()
    assert sum_of(reply) == [6, 7, 8, 9]
    assert reply.headers["content-type"] == "application/json"


def test_keep_alive_serves_many_requests_on_one_connection(served: Served) -> None:
    with RawClient(served.http) as client:
        for value in range(5):
            client.send(request("POST", INFER, pair_json([value] * 4)))
            assert sum_of(client.reply()) == [value + 1] * 4


def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    with RawClient(served.http) as client:
        client.send(b"".join(request("POST", INFER, pair_json([value] * 4)) for value in range(6)))
        assert [sum_of(client.reply())[0] for _ in range(6)] == [1, 2, 3, 4, 5, 6]


def test_pipelined_inference_and_other_routes_keep_their_order(served: Served) -> None:
    with RawClient(served.http) as client:
        client.send(
            request("GET", "/v2/health/ready")
            + request("POST", INFER, pair_json([1, 1, 1, 1]))
            + request("GET", "/v2/models/pair")
            + request("POST", INFER, pair_json([2, 2, 2, 2]))
        )
        assert client.reply().json() == {"ready": True}
        assert sum_of(client.reply()) == [2, 2, 2, 2]
        metadata = client.reply().json()
        assert isinstance(metadata, dict)
        assert metadata["name"] == "pair"
        assert sum_of(client.reply()) == [3, 3, 3, 3]


def test_connection_close_is_honoured_after_the_reply(served: Served) -> None:
    with RawClient(served.http) as client:
        client.send(request("POST", INFER, pair_json([1, 2, 3, 4]), {"connection": "close"}))
        reply = client.reply()
        assert sum_of(reply) == [2, 3, 4, 5]
        assert reply.headers["connection"] == "close"
        assert client.read_until_closed() == b""


def test_http_1_0_without_keep_alive_is_closed_after_the_reply(served: Served) -> None:
    with RawClient(served.http) as client:
        client.send(request("GET", "/v2/health/live", version="1.0"))
        assert client.reply().json() == {"live": True}
        assert client.read_until_closed() == b""


def test_an_idle_connection_is_closed_after_the_configured_keep_alive(factories: Factories) -> None:
    running = start_served(factories, free_config(keep_alive_s=0.2))
    try:
        with RawClient(running.http) as client:
            client.send(request("GET", "/v2/health/live"))
            assert client.reply().json() == {"live": True}
            client.sock.settimeout(3.0)  # under the 5 s default: only the configured 0.2 s closes it
            assert client.read_until_closed() == b""
    finally:
        running.server.stop()


def test_a_chunked_body_is_served(served: Served) -> None:
    body = pair_json([1, 2, 3, 4])
    with RawClient(served.http) as client:
        client.send(
            request(
                "POST", INFER, chunked(body[:10], body[10:30], body[30:]), {"transfer-encoding": "chunked"}
            )
        )
        assert sum_of(client.reply()) == [2, 3, 4, 5]
        client.send(request("POST", INFER, pair_json([0, 0, 0, 0])))
        assert sum_of(client.reply()) == [1, 1, 1, 1]


def test_a_declared_body_over_the_limit_gets_413_at_once_and_the_connection_closes(limited: Served) -> None:
    with RawClient(limited.http) as client:
        client.send(request("POST", INFER, headers={"content-length": "10000"}))  # no body sent
        reply = client.reply()
        assert reply.status == 413
        assert "10000 bytes, limit 4096" in str(reply.json())
        assert reply.headers["connection"] == "close"
        assert client.read_until_closed() == b""


def test_a_chunked_body_gets_413_as_soon_as_it_passes_the_limit(limited: Served) -> None:
    with RawClient(limited.http) as client:
        head = request("POST", INFER, headers={"transfer-encoding": "chunked"})
        client.send(head + chunked(b" " * 3000, b" " * 3000, end=False))  # the body never ends
        reply = client.reply()
        assert reply.status == 413
        assert "6000 bytes, limit 4096" in str(reply.json())
        assert client.read_until_closed() == b""


def test_other_routes_have_the_same_body_limit(limited: Served) -> None:
    with RawClient(limited.http) as client:
        client.send(request("POST", "/v2/repository/index", b"{" + b" " * 5000 + b"}"))
        reply = client.reply()
        assert reply.status == 413
        assert "5002 bytes, limit 4096" in str(reply.json())


def test_the_server_serves_on_after_a_refused_body(limited: Served) -> None:
    with RawClient(limited.http) as client:
        client.send(request("POST", INFER, b" " * 5000))
        assert client.reply().status == 413
    with RawClient(limited.http) as client:
        client.send(request("POST", INFER, pair_json([1, 2, 3, 4])))
        assert sum_of(client.reply()) == [2, 3, 4, 5]


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT-HTTP\r\n\r\n",
        b"POST /v2/models/pair/infer HTTP/1.1\r\ncontent-length: nope\r\n\r\n",
        b"POST /v2/models/pair/infer HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["request line", "content-length", "chunk size"],
)
def test_a_malformed_request_gets_400_and_the_connection_closes(served: Served, raw: bytes) -> None:
    with RawClient(served.http) as client:
        client.send(raw)
        reply = client.reply()
        assert reply.status == 400
        doc = reply.json()
        assert isinstance(doc, dict)
        assert "malformed HTTP request" in doc["error"]
        assert client.read_until_closed() == b""


def test_expect_100_continue_gets_the_interim_reply_then_the_answer(served: Served) -> None:
    body = pair_json([1, 2, 3, 4])
    with RawClient(served.http) as client:
        client.send(
            request("POST", INFER, headers={"content-length": str(len(body)), "expect": "100-continue"})
        )
        assert client.reply().status == 100
        client.send(body)
        assert sum_of(client.reply()) == [2, 3, 4, 5]


def test_head_requests_get_headers_without_a_body(served: Served) -> None:
    with RawClient(served.http) as client:
        client.send(request("HEAD", "/v2/health/live") + request("GET", "/v2/health/live"))
        head = client.reply(head_only=True)
        assert head.status == 200
        assert int(head.headers["content-length"]) > 0
        assert client.reply().json() == {"live": True}


def test_unknown_model_and_unknown_route(served: Served) -> None:
    with RawClient(served.http) as client:
        client.send(request("POST", "/v2/models/nope/infer", pair_json([1, 2, 3, 4])))
        missing = client.reply()
        client.send(request("GET", "/v3/nothing"))
        route = client.reply()
    assert missing.status == 404
    assert "nope" in str(missing.json())
    assert route.status == 404
    assert "no such endpoint" in str(route.json())


async def _via_asgi(served: Served, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    app = create_app(served.server.server.core)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kiln") as client:
        reply = await client.post(path, content=body, headers=headers)
    return reply.status_code, reply.content


BAD = {
    "not json": ("/v2/models/pair/infer", b"{nope", {}),
    "wrong shape": ("/v2/models/pair/infer", pair_json([1, 2, 3]), {}),
    "unknown model": ("/v2/models/nope/infer", pair_json([1, 2, 3, 4]), {}),
    "bad path": ("/v2/models/pair/versions//infer", pair_json([1, 2, 3, 4]), {}),
    "header length": (
        "/v2/models/pair/infer",
        pair_json([1, 2, 3, 4]),
        {"inference-header-content-length": "x"},
    ),
    "header too long": (
        "/v2/models/pair/infer",
        pair_json([1, 2, 3, 4]),
        {"inference-header-content-length": "99999"},
    ),
    "zero header": (
        "/v2/models/pair/infer",
        pair_json([1, 2, 3, 4]),
        {"inference-header-content-length": "0"},
    ),
    "unknown output": ("/v2/models/pair/infer", pair_json([1, 2, 3, 4], outputs=[{"name": "x"}]), {}),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_errors_are_the_same_as_the_asgi_route_s(served: Served, case: str) -> None:
    path, body, headers = BAD[case]
    with RawClient(served.http) as client:
        client.send(request("POST", path, body, headers))
        reply = client.reply()
        client.send(request("POST", INFER, pair_json([1, 2, 3, 4])))
        assert sum_of(client.reply()) == [2, 3, 4, 5]  # the connection stays usable
    status, expected = served.server.call(_via_asgi(served, path, body, headers))
    assert reply.status == status
    assert reply.status >= 400
    assert reply.body == expected


def test_a_client_that_leaves_mid_body_or_mid_run_does_not_disturb_others(served: Served) -> None:
    body = pair_json([1, 2, 3, 4])
    with RawClient(served.http) as half:
        half.send(request("POST", INFER, headers={"content-length": str(len(body))}) + body[:20])
    with RawClient(served.http) as gone:
        gone.send(b"".join(request("POST", INFER, body) for _ in range(4)))
    with RawClient(served.http) as client:
        client.send(request("POST", INFER, body))
        assert sum_of(client.reply()) == [2, 3, 4, 5]

    async def drained() -> bool:
        return await served.server.server.core.wait_drained(10.0)

    assert served.server.call(drained())


def test_an_upgrade_request_is_answered_as_http_then_the_connection_closes(served: Served) -> None:
    with RawClient(served.http) as client:
        client.send(
            request("GET", "/v2/health/live", headers={"connection": "upgrade", "upgrade": "websocket"})
        )
        reply = client.reply()
        assert reply.json() == {"live": True}
        assert reply.headers["connection"] == "close"
        assert client.read_until_closed() == b""
