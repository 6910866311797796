"""tritonclient.grpc, unmodified, against kiln's gRPC service."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from server_harness import Factories, Served, free_config, start_served
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def client(served: Served) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(served.grpc)


def pair_inputs(rows: int = 2) -> tuple[list[grpcclient.InferInput], np.ndarray, np.ndarray]:
    a = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    b = np.full((rows, 4), 2.0, np.float32)
    inputs = [grpcclient.InferInput("a", [rows, 4], "FP32"), grpcclient.InferInput("b", [rows, 4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a, b


def test_health_metadata_and_config(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("pair")
    assert not client.is_model_ready("pair", "4")
    assert not client.is_model_ready("nope")
    assert "statistics" in client.get_server_metadata(as_json=True)["extensions"]
    metadata = client.get_model_metadata("ctr", as_json=True)
    assert [t["name"] for t in metadata["inputs"]] == ["dense", "sparse"]
    assert metadata["inputs"][1]["shape"] == ["-1", "26"]
    config = client.get_model_config("ctr").config
    assert config.max_batch_size == 16
    assert [list(i.dims) for i in config.input] == [[13], [26]]
    assert config.input[1].data_type == grpcclient.model_config_pb2.TYPE_INT64
    assert config.dynamic_batching.max_queue_delay_microseconds == 500


def test_inference_with_raw_contents_and_requested_outputs(client: grpcclient.InferenceServerClient) -> None:
    inputs, a, b = pair_inputs()
    result = client.infer("pair", inputs, outputs=[grpcclient.InferRequestedOutput("sum")], request_id="g1")
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    assert result.as_numpy("diff") is None
    assert result.get_response().id == "g1"
    full = client.infer("pair", inputs, model_version="1", priority=3, timeout=2_000_000)
    np.testing.assert_array_equal(full.as_numpy("diff"), a - b)


def test_ctr_batch_of_one(client: grpcclient.InferenceServerClient) -> None:
    dense = grpcclient.InferInput("dense", [1, 13], "FP32")
    dense.set_data_from_numpy(np.zeros((1, 13), np.float32))
    sparse = grpcclient.InferInput("sparse", [1, 26], "INT64")
    sparse.set_data_from_numpy(np.zeros((1, 26), np.int64))
    prob = client.infer("ctr", [dense, sparse]).as_numpy("prob")
    assert prob.shape == (1, 1)
    assert 0.0 < float(prob[0, 0]) < 1.0


def test_statistics(client: grpcclient.InferenceServerClient) -> None:
    client.infer("pair", pair_inputs()[0])
    stats = client.get_inference_statistics("pair", as_json=True)["model_stats"][0]
    assert stats["version"] == "1"
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    assert int(stats["inference_count"]) >= 2


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        (lambda c: c.get_model_metadata("nope"), "NOT_FOUND", "no model named 'nope'"),
        (lambda c: c.infer("pair", pair_inputs()[0][:1]), "INVALID_ARGUMENT", "missing input 'b'"),
        (lambda c: c.infer("pair", pair_inputs()[0], model_version="8"), "NOT_FOUND", "no ready version '8'"),
        (lambda c: c.infer("pair", pair_inputs()[0], timeout=1), "DEADLINE_EXCEEDED", "deadline"),
        (lambda c: c.get_model_config("spare"), "UNAVAILABLE", "no version serving"),
    ],
)
def test_errors_carry_grpc_codes(
    client: grpcclient.InferenceServerClient, call, code: str, message: str
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as caught:
        call(client)
    assert caught.value.status() == f"StatusCode.{code}"
    assert message in caught.value.message()
    assert client.infer("pair", pair_inputs()[0]).as_numpy("sum") is not None


def test_repository_rpcs(client: grpcclient.InferenceServerClient, served: Served) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "ctr", "version": "1", "state": "READY"} in index
    client.load_model("spare")
    assert served.control.handles["spare"].result(60).state == "READY"
    assert client.is_model_ready("spare")
    client.unload_model("spare")
    served.control.handles["spare"].result(60)
    assert not client.is_model_ready("spare")


@pytest.fixture
def small_messages(factories: Factories) -> Iterator[Served]:
    running = start_served(factories, free_config(grpc_max_message_bytes=64 * 1024))
    yield running
    running.server.stop()


def test_an_oversized_message_is_resource_exhausted(small_messages: Served) -> None:
    client = grpcclient.InferenceServerClient(small_messages.grpc)
    inputs, _, _ = pair_inputs(8192)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("pair", inputs)
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "larger than max" in caught.value.message()
    assert client.infer("pair", pair_inputs()[0]).as_numpy("sum") is not None
