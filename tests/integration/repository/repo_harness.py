"""A real kiln server in front of a real model repository: engines built through a real cache on a
build thread, ONNX Runtime engines, uvicorn + grpc.aio on free loopback ports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tritonclient.http as httpclient
from onnx import numpy_helper

from kiln.examples import get_example, make_model, make_samples
from kiln.repository import RepositoryManager, create_repository
from kiln.repository.control import IndexEntry
from kiln.runtime import Runtime
from kiln.server.config import ServerConfig
from kiln.server.serve import BackgroundServer

POLL_S = 0.05


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def ctr_bytes(seed: int = 0) -> bytes:
    """The tiny CTR example; another seed = the same graph with other weights."""
    return bytes(make_model("ctr", size="tiny", seed=seed).SerializeToString())


def nan_ctr_bytes() -> bytes:
    """The tiny CTR graph with every float weight NaN: same structure, outputs NaN."""
    model = make_model("ctr", size="tiny")
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(tensor)
            nan = numpy_helper.from_array(np.full_like(values, np.nan), tensor.name)
            model.graph.initializer[index].CopyFrom(nan)
    return bytes(model.SerializeToString())


def ctr_inputs(rows: int = 2, seed: int = 3) -> list[httpclient.InferInput]:
    samples = make_samples("ctr", rows, size="tiny", seed=seed)
    inputs = []
    for spec in get_example("ctr").inputs("tiny"):
        array = samples[spec.name]
        tensor = httpclient.InferInput(spec.name, list(array.shape), spec.datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    return inputs


@dataclass
class RepoServer:
    repo: Path
    runtime: Runtime
    manager: RepositoryManager
    background: BackgroundServer

    @property
    def http_url(self) -> str:
        return self.background.http_url

    @property
    def grpc_url(self) -> str:
        url = self.background.grpc_url
        assert url is not None
        return url

    def entry(self, model: str, version: str) -> IndexEntry | None:
        return next((e for e in self.manager.index() if (e.name, e.version) == (model, version)), None)

    def state(self, model: str, version: str) -> str | None:
        entry = self.entry(model, version)
        return None if entry is None else entry.state

    def wait_state(self, model: str, version: str, state: str, timeout_s: float = 60) -> IndexEntry:
        wait_for(lambda: self.state(model, version) == state, timeout_s, f"{model}/{version} {state}")
        entry = self.entry(model, version)
        assert entry is not None
        return entry

    def wait_steps(self, count: int, timeout_s: float = 30) -> None:
        """Wait until the watcher has scanned ``count`` more times."""
        target = self.manager.watcher.num_steps + count
        wait_for(lambda: self.manager.watcher.num_steps >= target, timeout_s, f"{count} scans")

    def infer(self, model: str = "ctr", rows: int = 2) -> tuple[str, np.ndarray]:
        client = httpclient.InferenceServerClient(self.http_url)
        try:
            result = client.infer(model, ctr_inputs(rows))
        finally:
            client.close()
        output = result.as_numpy(get_example("ctr").output_names[0])
        assert output is not None
        return str(result.get_response()["model_version"]), output


@contextmanager
def repo_server(repo: Path, cache: Path, **options: Any) -> Iterator[RepoServer]:
    """Serve ``repo`` (polled every 50 ms, builds on a thread, engines in ``cache``)."""
    settings: dict[str, Any] = {
        "poll_interval_s": POLL_S,
        "settle_s": 0.0,
        "build_in": "thread",
        "cache_dir": cache,
    }
    settings.update(options)
    runtime = Runtime()
    manager = create_repository(repo, runtime, **settings)
    config = ServerConfig(host="127.0.0.1", http_port=0, grpc_port=0)
    background = BackgroundServer(runtime, manager, config, close_runtime=True).start()
    try:
        background.call(manager.start(), 60)
        yield RepoServer(repo, runtime, manager, background)
    finally:
        background.call(manager.aclose(), 60)
        background.stop()
