"""Not one failed request while versions change: tritonclient (HTTP and gRPC) sends requests
without pause while new versions are published with ``publish_version``; every request succeeds
and the newest version ends up serving them."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from repo_harness import ctr_bytes, repo_server, wait_for

from kiln.examples import get_example, make_samples
from kiln.repository.layout import MODEL_FILE
from kiln.repository.publish import publish_version

OUTPUT = get_example("ctr").output_names[0]


class Caller:
    """One client thread: infers until stopped, recording each answer's version or error."""

    def __init__(self, protocol: str, url: str) -> None:
        self.protocol, self.url = protocol, url
        self.versions: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"caller-{protocol}")

    def run(self) -> None:
        module = httpclient if self.protocol == "http" else grpcclient
        client = module.InferenceServerClient(self.url)
        samples = make_samples("ctr", 1, size="tiny", seed=5)
        inputs = []
        for spec in get_example("ctr").inputs("tiny"):
            tensor = module.InferInput(spec.name, list(samples[spec.name].shape), spec.datatype)
            tensor.set_data_from_numpy(samples[spec.name])
            inputs.append(tensor)
        while not self.stop.is_set():
            try:
                result = client.infer("ctr", inputs)
                output = result.as_numpy(OUTPUT)
                assert output is not None
                assert np.isfinite(output).all()
                response = result.get_response()
                version = response["model_version"] if self.protocol == "http" else response.model_version
                self.versions.append(str(version))
            except Exception as exc:  # every failure is recorded and fails the test
                self.errors.append(f"{type(exc).__name__}: {exc}")
        client.close()


def test_every_request_succeeds_while_new_versions_are_published(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=0)})
    with repo_server(repo, tmp_path / "cache") as server:
        server.wait_state("ctr", "1", "READY")
        callers = [Caller(p, u) for p, u in [("http", server.http_url), ("grpc", server.grpc_url)] * 2]
        for caller in callers:
            caller.thread.start()
        try:
            wait_for(lambda: all(len(c.versions) > 5 for c in callers), 60, "requests on version 1")
            for seed in (1, 2, 3):
                published = publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=seed)})
                server.wait_state("ctr", published.version, "READY")
                seen = [len(c.versions) for c in callers]
                wait_for(
                    lambda seen=seen: all(
                        len(c.versions) > n + 5 for c, n in zip(callers, seen, strict=True)
                    ),
                    60,
                    "requests after the swap",
                )
        finally:
            for caller in callers:
                caller.stop.set()
            for caller in callers:
                caller.thread.join(60)

        assert [c.errors for c in callers] == [[]] * len(callers)
        assert all(c.versions[-1] == "4" for c in callers)
        served = {v for c in callers for v in c.versions}
        assert served == {"1", "2", "3", "4"}
        for caller in callers:  # versions only move forward, per client
            numbers = [int(v) for v in caller.versions]
            assert numbers == sorted(numbers)
