"""tritonclient.http, unmodified, against kiln's server: every endpoint it has, JSON and binary."""

from __future__ import annotations

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from server_harness import Served
from server_models import ctr_model
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def client(served: Served) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(served.http)


def ctr_inputs(
    rows: int, *, binary: bool, seed: int = 0
) -> tuple[list[httpclient.InferInput], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    arrays = {
        "dense": rng.standard_normal((rows, 13)).astype(np.float32),
        "sparse": rng.integers(0, 1000, (rows, 26)).astype(np.int64),
    }
    inputs = []
    for name, array in arrays.items():
        tensor = httpclient.InferInput(
            name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64"
        )
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs, arrays


def reference_ctr(arrays: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(ctr_model().SerializeToString(), providers=["CPUExecutionProvider"])
    (prob,) = session.run(["prob"], arrays)
    return np.asarray(prob)


def test_prometheus_metrics_on_the_http_port(served: Served) -> None:
    reply = httpx.get(f"http://{served.http}/metrics")
    assert reply.status_code == 200
    assert "python_info" in reply.text


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "kiln"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_config_and_readiness(client: httpclient.InferenceServerClient) -> None:
    assert client.is_model_ready("ctr")
    assert client.is_model_ready("ctr", "1")
    assert not client.is_model_ready("ctr", "5")
    assert not client.is_model_ready("spare")
    metadata = client.get_model_metadata("ctr")
    assert metadata["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("dense", "FP32", [-1, 13]),
        ("sparse", "INT64", [-1, 26]),
    ]
    config = client.get_model_config("ctr")
    assert config["max_batch_size"] == 16
    assert [i["dims"] for i in config["input"]] == [[13], [26]]
    assert config["output"] == [{"name": "prob", "data_type": "TYPE_FP32", "dims": [1]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 500


@pytest.mark.parametrize("binary", [False, True])
def test_ctr_inference_matches_onnx_runtime(client: httpclient.InferenceServerClient, binary: bool) -> None:
    inputs, arrays = ctr_inputs(3, binary=binary)
    outputs = [httpclient.InferRequestedOutput("prob", binary_data=binary)]
    result = client.infer("ctr", inputs, outputs=outputs, request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("prob"), reference_ctr(arrays), rtol=1e-5, atol=1e-6)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("ctr", "1", "req-7")


def test_two_inputs_and_a_requested_output_subset(client: httpclient.InferenceServerClient) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 0.5, np.float32)
    inputs = [httpclient.InferInput("a", [2, 4], "FP32"), httpclient.InferInput("b", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(a, binary_data=True)
    inputs[1].set_data_from_numpy(b, binary_data=False)
    result = client.infer("pair", inputs, outputs=[httpclient.InferRequestedOutput("diff", binary_data=True)])
    np.testing.assert_array_equal(result.as_numpy("diff"), a - b)
    assert result.as_numpy("sum") is None
    everything = client.infer("pair", inputs, model_version="1", priority=1, timeout=5_000_000)
    np.testing.assert_array_equal(everything.as_numpy("sum"), a + b)


def test_statistics_count_what_was_served(client: httpclient.InferenceServerClient) -> None:
    before = client.get_inference_statistics("pair")["model_stats"][0]
    inputs = [httpclient.InferInput("a", [1, 4], "FP32"), httpclient.InferInput("b", [1, 4], "FP32")]
    for tensor in inputs:
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    client.infer("pair", inputs)
    after = client.get_inference_statistics("pair", "1")["model_stats"][0]
    assert after["inference_count"] == before["inference_count"] + 1
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    every = client.get_inference_statistics()
    assert {s["name"] for s in every["model_stats"]} == {"ctr", "pair"}


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda c: c.get_model_metadata("nope"), "404", "no model named 'nope'"),
        (lambda c: c.get_model_config("ctr", "9"), "404", "no version '9'"),
        (lambda c: c.get_model_metadata("spare"), "503", "no version serving"),
        (lambda c: c.infer("ctr", ctr_inputs(1, binary=True)[0][:1]), "400", "missing input 'sparse'"),
        (lambda c: c.infer("ctr", ctr_inputs(17, binary=True)[0]), "400", "request holds 17 rows"),
        (
            lambda c: c.infer("ctr", ctr_inputs(1, binary=True)[0], priority=7),
            "400",
            "'priority' is out of range",
        ),
        (lambda c: c.infer("ctr", ctr_inputs(1, binary=False)[0], timeout=1), "504", "deadline"),
        (lambda c: c.load_model("ctr", config='{"max_batch_size": 2}'), "501", "not supported"),
    ],
)
def test_errors_reach_the_client_with_status_and_message(
    client: httpclient.InferenceServerClient,
    call,
    status: str,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call(client)
    assert caught.value.status() == status
    assert message in caught.value.message()
    assert client.infer("ctr", ctr_inputs(1, binary=True)[0]).as_numpy("prob").shape == (1, 1)


def test_repository_index_load_and_unload(client: httpclient.InferenceServerClient, served: Served) -> None:
    index = {(e["name"], e["state"]) for e in client.get_model_repository_index()}
    assert {("ctr", "READY"), ("pair", "READY"), ("spare", "UNAVAILABLE")} <= index
    client.load_model("spare")
    assert served.control.handles["spare"].result(60).state == "READY"
    assert client.is_model_ready("spare")
    assert client.is_server_ready()
    client.unload_model("spare")
    served.control.handles["spare"].result(60)
    assert not client.is_model_ready("spare")
    assert client.is_server_ready()
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("missing")
    assert caught.value.status() == "404"


def test_stays_ready_while_a_model_reloads(client: httpclient.InferenceServerClient, served: Served) -> None:
    served.control.load("pair")
    handle = served.control.handles["pair"]
    while not handle.done():
        assert client.is_server_ready()
        assert client.is_model_ready("pair")
    assert handle.result(60).state == "READY"
    assert client.is_server_ready()
    assert client.get_model_metadata("pair")["versions"] == [handle.version]
