from __future__ import annotations

import json

import numpy as np
import pytest

from kiln.bench.peers.v2json import decode_inputs, encode_outputs, model_metadata, split_binary
from kiln.errors import InvalidInput
from kiln.types import TensorSpec

SPECS = (TensorSpec("dense", "FP32", (-1, 2)), TensorSpec("ids", "INT64", (-1, 1)))


def test_json_request_decodes_into_arrays_of_the_model_dtypes() -> None:
    body = {"inputs": [{"name": "dense", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.5]},
                       {"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [7]}]}  # fmt: skip
    arrays = decode_inputs(split_binary(json.dumps(body).encode(), None), SPECS)
    assert arrays["dense"].dtype == np.float32
    assert arrays["dense"].tolist() == [[1.5, 2.5]]
    assert arrays["ids"].tolist() == [[7]]


def test_binary_extension_request_decodes_the_raw_bytes() -> None:
    dense = np.array([[1.0, 2.0]], dtype=np.float32)
    ids = np.array([[3]], dtype=np.int64)
    header = json.dumps({"inputs": [
        {"name": "dense", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        {"name": "ids", "shape": [1, 1], "datatype": "INT64", "parameters": {"binary_data_size": 8}},
    ]}).encode()  # fmt: skip
    body = header + dense.tobytes() + ids.tobytes()
    arrays = decode_inputs(split_binary(body, len(header)), SPECS)
    np.testing.assert_array_equal(arrays["dense"], dense)
    np.testing.assert_array_equal(arrays["ids"], ids)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "no 'inputs'"),
        ({"inputs": [{"name": "other", "shape": [1], "data": [1]}]}, "unknown input"),
        ({"inputs": [{"name": "dense", "shape": [1, 2], "data": [1.0, 2.0]}]}, "missing"),
        ({"inputs": [{"name": "dense", "shape": [1, 3], "data": [1.0, 2.0]}]}, "does not fit its shape"),
    ],
)
def test_bad_requests_name_the_problem(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_inputs(body, SPECS)


def test_outputs_and_metadata_are_v2_json() -> None:
    reply = encode_outputs("ctr", {"p": np.array([[0.25]], dtype=np.float32)})
    assert reply == {
        "model_name": "ctr",
        "outputs": [{"name": "p", "shape": [1, 1], "datatype": "FP32", "data": [0.25]}],
    }
    meta = model_metadata("ctr", SPECS, (TensorSpec("p", "FP32", (-1, 1)),))
    assert meta["inputs"][0] == {"name": "dense", "datatype": "FP32", "shape": [-1, 2]}
    assert meta["outputs"][0]["name"] == "p"
