from __future__ import annotations

import numpy as np
import pytest

from kiln.errors import InvalidInput
from kiln.server.core import InferResponse
from kiln.server.grpc import codec
from kiln.server.grpc._generated import kserve_pb2 as pb


def request_with_raw(*tensors: tuple[str, str, np.ndarray]) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", model_version="2", id="r1")
    for name, datatype, array in tensors:
        message.inputs.add(name=name, datatype=datatype, shape=array.shape)
        message.raw_input_contents.append(array.tobytes())
    return message


def test_raw_input_contents_decode_in_input_order() -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    ids = np.arange(2, dtype=np.int64).reshape(2, 1)
    message = request_with_raw(("a", "FP32", a), ("ids", "INT64", ids))
    message.parameters["priority"].int64_param = 1
    message.parameters["timeout"].uint64_param = 2000
    message.outputs.add(name="y")
    request = codec.decode_request(message, tenant="acme", remaining_s=1.5)
    np.testing.assert_array_equal(request.inputs["a"], a)
    np.testing.assert_array_equal(request.inputs["ids"], ids)
    assert (request.model, request.version, request.id, request.tenant) == ("m", "2", "r1", "acme")
    assert (request.priority, request.timeout_us, request.remaining_s) == (1, 2000, 1.5)
    assert request.outputs == ("y",)


def test_typed_contents_decode_per_datatype() -> None:
    message = pb.ModelInferRequest(model_name="m")
    entry = message.inputs.add(name="a", datatype="FP32", shape=[1, 2])
    entry.contents.fp32_contents.extend([1.5, 2.5])
    entry = message.inputs.add(name="i", datatype="INT32", shape=[2])
    entry.contents.int_contents.extend([-1, 7])
    entry = message.inputs.add(name="s", datatype="BYTES", shape=[1])
    entry.contents.bytes_contents.append(b"hi")
    request = codec.decode_request(message, tenant="t", remaining_s=None)
    assert request.inputs["a"].tolist() == [[1.5, 2.5]]
    assert request.inputs["i"].dtype == np.int32
    assert request.inputs["s"].tolist() == [b"hi"]
    assert request.version is None
    assert request.outputs is None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: None, "no inputs"),
        (lambda m: m.raw_input_contents.append(b"\0" * 4), "2 raw buffers for 1 inputs"),
        (lambda m: setattr(m, "model_name", ""), "names no model"),
    ],
)
def test_malformed_requests_are_refused(build, message: str) -> None:  # type: ignore[no-untyped-def]
    request = pb.ModelInferRequest(model_name="m")
    if message != "no inputs":
        request = request_with_raw(("a", "FP32", np.zeros(1, np.float32)))
    build(request)
    with pytest.raises(InvalidInput, match=message):
        codec.decode_request(request, tenant="t", remaining_s=None)


def test_raw_size_mismatch_names_the_input() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="dense", datatype="FP32", shape=[1, 13])
    message.raw_input_contents.append(b"\0" * 12)
    with pytest.raises(InvalidInput, match=r"'dense' has 12 bytes of data; shape \[1, 13\] of FP32 needs 52"):
        codec.decode_request(message, tenant="t", remaining_s=None)


def test_fp16_has_no_typed_contents() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="h", datatype="FP16", shape=[1])
    with pytest.raises(InvalidInput, match="send it as raw_input_contents"):
        codec.decode_request(message, tenant="t", remaining_s=None)


def test_response_carries_raw_output_contents() -> None:
    y = np.array([[0.25, 0.5]], np.float32)
    reply = codec.encode_response(InferResponse("m", "3", "r", (("y", y),)))
    assert (reply.model_name, reply.model_version, reply.id) == ("m", "3", "r")
    assert reply.outputs[0].datatype == "FP32"
    assert list(reply.outputs[0].shape) == [1, 2]
    np.testing.assert_array_equal(np.frombuffer(reply.raw_output_contents[0], np.float32), y.ravel())


def test_protocol_json_fills_messages() -> None:
    data = {"name": "m", "max_batch_size": 8, "input": [{"name": "a", "data_type": "TYPE_FP32", "dims": [4]}]}
    config = codec.from_json(data, pb.ModelConfig())
    assert config.max_batch_size == 8
    assert config.input[0].data_type == pb.TYPE_FP32
