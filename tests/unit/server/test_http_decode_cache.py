"""RequestDecoder: a remembered header layout decodes exactly what decode_request decodes, and
anything that does not fit the layout is decoded (or refused) in full."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kiln.errors import InvalidInput
from kiln.server.http.codec import decode_request
from kiln.server.http.decode_cache import RequestDecoder

HEADER = {
    "id": "r7",
    "inputs": [
        {"name": "dense", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
        {"name": "ids", "datatype": "INT64", "shape": [2, 1], "parameters": {"binary_data_size": 16}},
    ],
    "outputs": [{"name": "prob", "parameters": {"binary_data": True}}],
    "parameters": {"priority": 1, "timeout": 900},
}


def body_of(header: dict[str, object], *tensors: np.ndarray) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(t.tobytes() for t in tensors), len(head)


def both(decoder: RequestDecoder, body: bytes, header_length: int | None):  # type: ignore[no-untyped-def]
    cached = decoder.decode(body, header_length, model="m", version="2", tenant="t")
    full = decode_request(body, header_length, model="m", version="2", tenant="t")
    return cached, full


def assert_same(cached, full) -> None:  # type: ignore[no-untyped-def]
    (request, plan), (expected, expected_plan) = cached, full
    assert plan == expected_plan
    assert (request.model, request.version, request.id, request.tenant) == (
        expected.model, expected.version, expected.id, expected.tenant,
    )  # fmt: skip
    assert (request.outputs, request.priority, request.timeout_us) == (
        expected.outputs, expected.priority, expected.timeout_us,
    )  # fmt: skip
    assert list(request.inputs) == list(expected.inputs)
    for name, array in expected.inputs.items():
        assert request.inputs[name].dtype == array.dtype
        np.testing.assert_array_equal(request.inputs[name], array)


def test_a_repeated_binary_header_decodes_each_body_s_own_values() -> None:
    decoder = RequestDecoder()
    for step in range(4):
        dense = np.arange(6, dtype=np.float32).reshape(2, 3) + step
        ids = np.array([[step], [step + 10]], dtype=np.int64)
        body, length = body_of(HEADER, dense, ids)
        cached, full = both(decoder, body, length)
        assert_same(cached, full)
        np.testing.assert_array_equal(cached[0].inputs["ids"], ids)


def test_a_body_that_does_not_fit_the_remembered_layout_gets_decode_request_s_error() -> None:
    decoder = RequestDecoder()
    body, length = body_of(HEADER, np.zeros((2, 3), np.float32), np.zeros((2, 1), np.int64))
    both(decoder, body, length)
    short = body[:-8]
    with pytest.raises(InvalidInput) as cached:
        decoder.decode(short, length, model="m", version="2", tenant="t")
    with pytest.raises(InvalidInput) as full:
        decode_request(short, length, model="m", version="2", tenant="t")
    assert str(cached.value) == str(full.value)
    assert "binary_data_size does not fit the body" in str(cached.value)


def test_inline_json_data_is_decoded_in_full_every_time() -> None:
    decoder = RequestDecoder()
    for value in (1.0, 2.0):
        header = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [value, value]}]}
        body = json.dumps(header).encode()
        both(decoder, body, None)
    request, _ = decoder.decode(body, None, model="m", version=None, tenant="t")
    assert request.inputs["a"].tolist() == [[2.0, 2.0]]


def test_mixed_json_and_binary_inputs_are_not_mistaken_for_a_binary_layout() -> None:
    decoder = RequestDecoder()
    header = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [3.0, 4.0]},
            {"name": "b", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
        ]
    }
    for step in range(3):
        body, length = body_of(header, np.full((1, 2), step, np.float32))
        cached, full = both(decoder, body, length)
        assert_same(cached, full)


def test_a_misaligned_tensor_is_copied_to_an_aligned_array() -> None:
    decoder = RequestDecoder()
    header = dict(HEADER, id="odd")  # an id of odd length shifts the binary part off alignment
    for step in range(2):
        body, length = body_of(header, np.full((2, 3), step, np.float32), np.full((2, 1), step, np.int64))
        (request, _), full = both(decoder, body, length)
        assert request.inputs["ids"].flags.aligned
        assert_same((request, _), full)


def test_no_more_than_max_entries_layouts_are_kept() -> None:
    decoder = RequestDecoder(max_entries=2)
    for index in range(5):
        body, length = body_of(
            dict(HEADER, id=f"r{index}"), np.zeros((2, 3), np.float32), np.zeros((2, 1), np.int64)
        )
        assert_same(*both(decoder, body, length))
    assert decoder.num_layouts == 2
