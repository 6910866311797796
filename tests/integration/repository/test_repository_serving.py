"""The model repository behind a real server: versions published with ``publish_version`` are picked
up at once (marker mode), built through the engine cache and hot-swapped; incomplete and failing
versions never serve; readiness holds through reloads; explicit load/unload over HTTP."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from repo_harness import ctr_bytes, nan_ctr_bytes, repo_server, wait_for

from kiln.examples import make_samples
from kiln.repository.layout import MARKER_FILE, MODEL_FILE
from kiln.repository.publish import publish_version


def reference(model: bytes) -> np.ndarray:
    """The fp32 ONNX Runtime output of ``model`` on the inputs ``RepoServer.infer`` sends."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    samples = make_samples("ctr", 2, size="tiny", seed=3)
    names = [i.name for i in session.get_inputs()]
    result: np.ndarray = session.run(None, {n: samples[n] for n in names})[0]
    return result


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    publish_version(folder, "ctr", {MODEL_FILE: ctr_bytes(seed=0)})
    return folder


def test_a_published_version_is_picked_up_built_and_swapped_in(repo: Path, tmp_path: Path) -> None:
    with repo_server(repo, tmp_path / "cache") as server:
        server.wait_state("ctr", "1", "READY")
        version, output = server.infer()
        assert version == "1"
        np.testing.assert_allclose(output, reference(ctr_bytes(0)), rtol=1e-4, atol=1e-5)

        published = publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=1)}, tag="retrain")

        assert published.version == "2"
        server.wait_state("ctr", "2", "READY")
        version, output = server.infer()
        assert version == "2"
        np.testing.assert_allclose(output, reference(ctr_bytes(1)), rtol=1e-4, atol=1e-5)
        assert server.state("ctr", "1") == "UNAVAILABLE"
        assert server.manager.build_path("ctr", "1") == "build"
        # ONNX Runtime cannot refit its optimized graph: the weight-only update is rebuilt
        assert server.manager.build_path("ctr", "2") in {"refit", "build"}


def test_a_version_that_outputs_nan_fails_warm_up_and_the_old_one_keeps_serving(
    repo: Path, tmp_path: Path
) -> None:
    with repo_server(repo, tmp_path / "cache") as server:
        server.wait_state("ctr", "1", "READY")

        publish_version(repo, "ctr", {MODEL_FILE: nan_ctr_bytes()})
        failed = server.wait_state("ctr", "2", "FAILED")

        assert "nan" in failed.reason.lower()
        assert server.state("ctr", "1") == "READY"
        assert server.infer()[0] == "1"
        assert httpx.get(f"http://{server.http_url}/v2/health/ready").status_code == 200


def test_a_version_that_is_not_a_model_fails_validation_with_its_reason(repo: Path, tmp_path: Path) -> None:
    with repo_server(repo, tmp_path / "cache") as server:
        server.wait_state("ctr", "1", "READY")

        publish_version(repo, "ctr", {MODEL_FILE: b"these bytes are not an ONNX model"})
        failed = server.wait_state("ctr", "2", "FAILED")

        assert failed.reason.startswith("build failed: ModelError")
        assert server.infer()[0] == "1"
        index = httpx.post(f"http://{server.http_url}/v2/repository/index", json={}).json()
        assert {"name": "ctr", "version": "2", "state": "FAILED", "reason": failed.reason} in index


def test_an_incomplete_version_is_never_loaded(repo: Path, tmp_path: Path) -> None:
    with repo_server(repo, tmp_path / "cache") as server:
        server.wait_state("ctr", "1", "READY")
        partial = repo / "ctr" / "2"
        partial.mkdir()
        (partial / MODEL_FILE).write_bytes(ctr_bytes(seed=1)[:1000])  # being copied, no READY yet

        server.wait_steps(3)

        entry = server.entry("ctr", "2")
        assert entry is not None
        assert entry.state == "UNAVAILABLE"
        assert MARKER_FILE in entry.reason
        assert server.infer()[0] == "1"

        (partial / MODEL_FILE).write_bytes(ctr_bytes(seed=1))
        (partial / MARKER_FILE).write_text("")
        server.wait_state("ctr", "2", "READY")
        assert server.infer()[0] == "2"


def test_readiness_stays_true_while_new_versions_load(repo: Path, tmp_path: Path) -> None:
    with repo_server(repo, tmp_path / "cache") as server:
        server.wait_state("ctr", "1", "READY")
        url = f"http://{server.http_url}/v2/health/ready"
        wait_for(lambda: httpx.get(url).status_code == 200, 30, "the server ready")
        statuses: list[int] = []
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client() as client:
                while not stop.is_set():
                    statuses.append(client.get(url).status_code)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            for seed in (1, 2):
                published = publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=seed)})
                server.wait_state("ctr", published.version, "READY")
            wait_for(lambda: len(statuses) > 10, 30, "readiness probes")
        finally:
            stop.set()
            prober.join()

        assert set(statuses) == {200}
        assert server.infer()[0] == "3"


def test_explicit_unload_and_load_return_at_once_and_are_pollable(repo: Path, tmp_path: Path) -> None:
    with repo_server(repo, tmp_path / "cache", poll_interval_s=0.0) as server:
        server.wait_state("ctr", "1", "READY")
        base = f"http://{server.http_url}/v2/repository/models/ctr"

        unloaded = httpx.post(f"{base}/unload", json={})
        assert unloaded.status_code == 200
        wait_for(lambda: server.state("ctr", "1") == "UNAVAILABLE", 30, "ctr unloaded")
        assert httpx.get(f"http://{server.http_url}/v2/models/ctr/ready").status_code != 200

        loaded = httpx.post(f"{base}/load", json={})
        assert loaded.status_code == 200
        server.wait_state("ctr", "1", "READY")
        assert server.manager.build_path("ctr", "1") == "hit"
        assert server.infer()[0] == "1"

        missing = httpx.post(f"http://{server.http_url}/v2/repository/models/nope/load", json={})
        assert missing.status_code == 404
        assert "nope" in missing.json()["error"]


def test_with_polling_off_a_new_version_waits_for_an_explicit_load(repo: Path, tmp_path: Path) -> None:
    with repo_server(repo, tmp_path / "cache", poll_interval_s=0.0) as server:
        server.wait_state("ctr", "1", "READY")
        publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=1)})
        steps = server.manager.watcher.num_steps

        assert server.entry("ctr", "2") is None
        assert server.manager.watcher.num_steps == steps

        assert (
            httpx.post(f"http://{server.http_url}/v2/repository/models/ctr/load", json={}).status_code == 200
        )
        server.wait_state("ctr", "2", "READY")
        assert server.infer()[0] == "2"


def test_a_weight_only_retrain_takes_the_refit_path(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the refit path is the torch backend's (the `torch` extra)")
    repo = tmp_path / "repo"
    (repo / "ctr").mkdir(parents=True)
    (repo / "ctr" / "config.yaml").write_text(
        "backend: torch\nmax_batch_size: 8\nbackend_options: {compile: eager, buckets: '1,4,8'}\n"
    )
    publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=0)})
    with repo_server(repo, tmp_path / "cache") as server:
        server.wait_state("ctr", "1", "READY", timeout_s=120)

        publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=1)})
        entry = server.wait_state("ctr", "2", "READY", timeout_s=120)

        assert server.manager.build_path("ctr", "1") == "build"
        assert server.manager.build_path("ctr", "2") == "refit"
        assert "by refit" in entry.reason
        version, output = server.infer()
        assert version == "2"
        np.testing.assert_allclose(output, reference(ctr_bytes(1)), rtol=1e-3, atol=1e-4)
