"""Bad requests over real sockets: each gets its status and a message naming the field, the value
and what was expected, and the server goes on serving the next request on the same connection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from server_harness import Factories, Served, free_config, start_served
from tritonclient.utils import InferenceServerException

from kiln.server.auth import Authenticator

GOOD = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
    ]
}
ACME = "acme-key-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


def with_input(index: int, **changes: object) -> bytes:
    body = json.loads(json.dumps(GOOD))
    body["inputs"][index].update(changes)
    return json.dumps(body).encode()


def binary(sizes: tuple[int, int], payload: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": sizes[0]},
                },
                {
                    "name": "b",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": sizes[1]},
                },
            ]
        }
    ).encode()
    return header + payload, {"Inference-Header-Content-Length": str(len(header))}


BINARY_SHORT = binary((16, 16), b"\0" * 24)
NAN_BODY = with_input(0, data=[1, "NaN", 3, 4]).replace(b'"NaN"', b"NaN")
PAST_DEADLINE = json.dumps({**GOOD, "parameters": {"timeout": 1}}).encode()
ONE_INPUT = json.dumps({"inputs": GOOD["inputs"][:1]}).encode()


@dataclass(frozen=True)
class Case:
    what: str
    path: str
    body: bytes
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


INFER = "/v2/models/pair/infer"
CASES = [
    Case("malformed JSON", INFER, b'{"inputs": [', 400, "not valid JSON"),
    Case("wrong datatype name", INFER, with_input(0, datatype="FLOAT"), 400, "unknown datatype"),
    Case("datatype not taken", INFER, with_input(0, datatype="FP64"), 400, "'a' has datatype FP64"),
    Case("shape/data mismatch", INFER, with_input(1, shape=[2, 4]), 400, "shape [2, 4] needs 8"),
    Case("wrong input name", INFER, with_input(1, name="c"), 400, "unknown input 'c'"),
    Case("missing input", INFER, ONE_INPUT, 400, "missing input 'b'"),
    Case("binary sizes", INFER, BINARY_SHORT[0], 400, "'b': binary_data_size does not fit", BINARY_SHORT[1]),
    Case("NaN in JSON", INFER, NAN_BODY, 400, "input 'a' holds NaN or Infinity"),
    Case("no such version", "/v2/models/pair/versions/42/infer", json.dumps(GOOD).encode(), 404, "'42'"),
    Case("model not ready", "/v2/models/spare/infer", json.dumps(GOOD).encode(), 503, "no active version"),
    Case("deadline already past", INFER, PAST_DEADLINE, 504, "reached its deadline"),
    Case("unknown model", "/v2/models/nope/infer", json.dumps(GOOD).encode(), 404, "no model named 'nope'"),
]


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{served.http}", timeout=30) as client:
        yield client


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_request_gets_status_and_message(http: httpx.Client, case: Case) -> None:
    reply = http.post(case.path, content=case.body, headers=case.headers)
    assert reply.status_code == case.status, reply.text
    assert case.message in reply.json()["error"]
    good = http.post("/v2/models/pair/infer", content=json.dumps(GOOD).encode())
    assert good.status_code == 200
    assert good.json()["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]


@pytest.fixture(scope="module")
def limited(factories: Factories) -> Iterator[Served]:
    auth = Authenticator({ACME: "acme"}, ADMIN)
    running = start_served(factories, free_config(max_request_bytes=4096), auth)
    yield running
    running.server.stop()


def test_a_body_over_the_limit_gets_413(limited: Served) -> None:
    with httpx.Client(base_url=f"http://{limited.http}", headers={"x-api-key": ACME}) as client:
        declared = client.post("/v2/models/pair/infer", content=b" " * 10_000)
        assert declared.status_code == 413, declared.text
        assert "10000 bytes, limit 4096" in declared.json()["error"]
        streamed = client.post("/v2/models/pair/infer", content=iter([b" " * 3000] * 3))
        assert streamed.status_code == 413, streamed.text
    with httpx.Client(base_url=f"http://{limited.http}", headers={"x-api-key": ACME}) as client:
        assert client.post("/v2/models/pair/infer", content=json.dumps(GOOD).encode()).status_code == 200


def test_unknown_api_keys_are_refused_over_http_and_grpc(limited: Served) -> None:
    http_client = httpclient.InferenceServerClient(limited.http)
    with pytest.raises(InferenceServerException) as caught:
        http_client.get_model_metadata("pair", headers={"x-api-key": "not-a-key-0123456789"})
    assert caught.value.status() == "401"
    assert "unknown API key" in caught.value.message()
    assert http_client.get_model_metadata("pair", headers={"x-api-key": ACME})["name"] == "pair"
    assert http_client.is_server_ready()

    grpc_client = grpcclient.InferenceServerClient(limited.grpc)
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.get_model_metadata("pair")
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
    assert "missing API key" in caught.value.message()
    tensors = [grpcclient.InferInput(name, [1, 4], "FP32") for name in ("a", "b")]
    for tensor in tensors:
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    result = grpc_client.infer("pair", tensors, headers={"authorization": f"Bearer {ACME}"})
    np.testing.assert_array_equal(result.as_numpy("sum"), np.full((1, 4), 2.0, np.float32))


def test_repository_changes_need_the_admin_token(limited: Served) -> None:
    http_client = httpclient.InferenceServerClient(limited.http)
    with pytest.raises(InferenceServerException) as caught:
        http_client.load_model("spare", headers={"x-api-key": ACME})
    assert caught.value.status() == "401"
    grpc_client = grpcclient.InferenceServerClient(limited.grpc)
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.unload_model("spare", headers={"x-api-key": ACME})
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
    http_client.load_model("spare", headers={"x-api-key": ADMIN})
    assert limited.control.handles["spare"].result(60).state == "READY"
