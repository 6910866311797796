from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from kiln.errors import InvalidInput
from kiln.server.core import InferResponse, Unsupported
from kiln.server.http.codec import OutputPlan, decode_request, encode_response


def decode(body: bytes, header_length: int | None = None):  # type: ignore[no-untyped-def]
    return decode_request(body, header_length, model="m", version=None, tenant="t")


def binary_body(header: dict[str, object], *tensors: np.ndarray) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(t.tobytes() for t in tensors), len(head)


def test_json_request_with_nested_and_flat_data() -> None:
    body = orjson.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
                {"name": "b", "datatype": "INT64", "shape": [2, 2], "data": [5, 6, 7, 8]},
            ],
            "parameters": {"priority": 1, "timeout": 500},
        }
    )
    request, plan = decode(body)
    assert request.id == "r1"
    np.testing.assert_array_equal(request.inputs["a"], [[1, 2], [3, 4]])
    assert request.inputs["b"].dtype == np.int64
    assert (request.priority, request.timeout_us, request.outputs) == (1, 500, None)
    assert plan == OutputPlan(False)


def test_header_length_equal_to_the_body_is_plain_json() -> None:
    body = orjson.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1.5]}]})
    request, _ = decode(body, len(body))
    assert request.inputs["a"].tolist() == [1.5]


def test_binary_tensors_follow_the_json_header_in_input_order() -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    ids = np.arange(3, dtype=np.int64).reshape(1, 3)
    header = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": a.nbytes}},
            {
                "name": "ids",
                "datatype": "INT64",
                "shape": [1, 3],
                "parameters": {"binary_data_size": ids.nbytes},
            },
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
    }
    request, plan = decode(*binary_body(header, a, ids))
    np.testing.assert_array_equal(request.inputs["a"], a)
    np.testing.assert_array_equal(request.inputs["ids"], ids)
    assert request.outputs == ("y", "z")
    assert plan.is_binary("y")
    assert not plan.is_binary("z")


def test_binary_and_json_inputs_mix() -> None:
    a = np.ones((1, 2), np.float32)
    header = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
            {"name": "b", "datatype": "FP32", "shape": [1, 2], "data": [3, 4]},
        ]
    }
    request, _ = decode(*binary_body(header, a))
    assert request.inputs["b"].tolist() == [[3.0, 4.0]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "the request must be a JSON object"),
        (b"{}", "no 'inputs' list"),
        (b'{"inputs": [{"name": "a", "shape": [1]}]}', "lacks 'name', 'datatype' or 'shape'"),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]}',
            "no 'data' and no binary_data_size",
        ),
        (b'{"inputs": [{"name": "a", "datatype": "FLOAT", "shape": [1], "data": [1]}]}', "unknown datatype"),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1]}]}', "has 1 elements"),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1], "data": [1]}]}', "invalid shape"),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]},'
            b'{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            "given twice",
        ),
        (
            b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": {}}',
            "must be a list",
        ),
    ],
)
def test_malformed_requests_name_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode(body)


def test_nan_and_infinity_in_json_are_refused_naming_the_input() -> None:
    body = b'{"inputs": [{"name": "ok", "datatype": "FP32", "shape": [1], "data": [1]},' + (
        b'{"name": "dense", "datatype": "FP32", "shape": [3], "data": [1.0, NaN, -Infinity]}]}'
    )
    with pytest.raises(InvalidInput, match="input 'dense' holds NaN or Infinity"):
        decode(body, len(body))


def test_nan_in_an_integer_input_is_refused() -> None:
    body = b'{"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1], "data": [NaN]}]}'
    with pytest.raises(InvalidInput, match="'ids' data does not convert to INT64"):
        decode(body)


@pytest.mark.parametrize(
    ("sizes", "extra", "message"),
    [
        ((8, 8), b"", "'b': binary_data_size does not fit the body"),
        ((8, 4), b"\0" * 4, "do not add up"),
        ((4, 8), b"", "'a' has 4 bytes of data"),
        ((-8, 8), b"", "'a': binary_data_size does not fit"),
    ],
)
def test_binary_sizes_that_do_not_add_up_are_refused(
    sizes: tuple[int, int], extra: bytes, message: str
) -> None:
    header = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": sizes[0]}},
            {"name": "b", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": sizes[1]}},
        ]
    }
    body, length = binary_body(header, np.zeros(2, np.float32), np.zeros(1, np.float32))
    with pytest.raises(InvalidInput, match=message):
        decode(body + extra, length)


def test_header_length_past_the_body_is_refused() -> None:
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length does not fit the body"):
        decode(b"{}", 10)


def test_raw_body_without_json_header_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="Inference-Header-Content-Length 0"):
        decode(b"\0\0\0\0", 0)


def test_classification_outputs_are_unsupported() -> None:
    body = b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}],'
    body += b'"outputs": [{"name": "y", "parameters": {"classification": 3}}]}'
    with pytest.raises(Unsupported, match="classification"):
        decode(body)


def test_response_as_json() -> None:
    response = InferResponse("m", "2", "r9", (("y", np.array([[0.5, 1.5]], np.float32)),))
    body, header_length = encode_response(response, OutputPlan(False))
    assert header_length is None
    assert orjson.loads(body) == {
        "model_name": "m",
        "model_version": "2",
        "id": "r9",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1.5]}],
    }


def test_response_with_binary_outputs_after_the_header() -> None:
    y = np.array([[0.5, 1.5]], np.float32)
    z = np.array([b"hi"], dtype=object)
    response = InferResponse("m", "1", "", (("y", y), ("z", z)))
    body, header_length = encode_response(response, OutputPlan(True, {"z": False}))
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert "id" not in header
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert header["outputs"][1] == {"name": "z", "datatype": "BYTES", "shape": [1], "data": ["hi"]}
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], np.float32), y.ravel())
