"""Each peer server starts on loopback in its own process, answers KServe v2 requests (JSON and
the binary-tensor extension) with the model's outputs, refuses a model it does not serve, and
stops with its whole process group."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
from tritonclient import http

from kiln.bench.inputs import RequestPool
from kiln.bench.kserve import KServeTarget
from kiln.bench.load import ClosedLoop, run_closed
from kiln.bench.peers import PEER_KINDS, PeerProcess, PeerSpec, UnoptimizedTarget, create_session
from kiln.bench.peers.ort import run_session, signature
from kiln.errors import ModelNotFound
from kiln.examples import build_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model("ctr", tmp_path_factory.mktemp("peers") / "ctr.onnx", size="tiny")


def payload(model: Path) -> dict[str, np.ndarray]:
    inputs, _ = signature(model)
    return dict(RequestPool.random(inputs, batch_size=2, seed=3, int_range=(0, 10))[0])


def infer(url: str, arrays: dict[str, np.ndarray], *, binary: bool) -> np.ndarray:
    client = http.InferenceServerClient(url.removeprefix("http://"))
    try:
        tensors = []
        for name, array in arrays.items():
            tensor = http.InferInput(
                name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64"
            )
            tensor.set_data_from_numpy(array, binary_data=binary)
            tensors.append(tensor)
        result = client.infer("ctr", tensors)
        name = result.get_response()["outputs"][0]["name"]
        return np.asarray(result.as_numpy(name))
    finally:
        client.close()


@pytest.mark.parametrize("kind", PEER_KINDS)
def test_peer_serves_the_models_outputs(kind: str, model: Path, tmp_path: Path) -> None:
    arrays = payload(model)
    expected = next(iter(run_session(create_session(model, optimized=False), arrays).values()))
    with PeerProcess(PeerSpec(kind, model, "ctr", cache_dir=tmp_path / "cache")) as peer:  # type: ignore[arg-type]
        pid = peer._proc.pid if peer._proc else 0
        for binary in (True, False):
            np.testing.assert_allclose(infer(peer.url, arrays, binary=binary), expected, rtol=1e-4, atol=1e-5)
        with pytest.raises(ModelNotFound, match="it serves: ctr"):
            asyncio.run(KServeTarget(peer.url, "other").open())
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole group is gone


def test_unoptimized_target_runs_one_request_per_run(model: Path) -> None:
    async def run() -> tuple[int, int]:
        target = UnoptimizedTarget(model)
        inputs = await target.open()
        pool = RequestPool.random(inputs, batch_size=1, seed=0, int_range=(0, 10))
        try:
            step = await run_closed(target, pool, ClosedLoop(2, 0.3, 0.05))
        finally:
            await target.aclose()
        return step.ok, step.failed

    ok, failed = asyncio.run(run())
    assert ok > 0
    assert failed == 0
