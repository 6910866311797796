"""A version queued behind another's build and passed over for a newer one is told to the
repository's hooks (the online loop journals it), once, with the reason."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

from repo_harness import ctr_bytes, repo_server, wait_for

from kiln.repository import BuildJob, BuildOutcome, NoHooks, ThreadBuilder
from kiln.repository.layout import MODEL_FILE
from kiln.repository.publish import publish_version


class HeldBuilder(ThreadBuilder):
    """Builds for real; version 2's build waits until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def submit(self, job: BuildJob) -> Future[BuildOutcome]:
        if job.version != "2":
            return super().submit(job)
        outer: Future[BuildOutcome] = Future()

        build = super().submit

        def held() -> None:
            if not self.release.wait(60):
                outer.set_exception(TimeoutError("version 2's build was never released"))
                return
            build(job).add_done_callback(lambda done: outer.set_result(done.result()))

        threading.Thread(target=held, daemon=True).start()
        return outer


class Recorder(NoHooks):
    def __init__(self) -> None:
        self.passed_over: list[tuple[str, str, str]] = []

    def on_superseded(self, model: str, version: str, reason: str) -> None:
        self.passed_over.append((model, version, reason))


def test_a_version_queued_behind_a_build_and_passed_over_reaches_the_hooks(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=0)})
    builder, hooks = HeldBuilder(), Recorder()
    with repo_server(repo, tmp_path / "cache", builder=builder, hooks=hooks) as server:
        server.wait_state("ctr", "1", "READY")
        publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=1)})
        server.wait_state("ctr", "2", "LOADING")  # building, held
        publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=2)})

        def queued() -> bool:
            entry = server.entry("ctr", "3")
            return entry is not None and "waiting for a build slot" in entry.reason

        wait_for(queued, 30, "version 3 queued behind version 2's build")
        publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=3)})
        wait_for(lambda: hooks.passed_over, 30, "the hooks told of version 3")
        builder.release.set()
        server.wait_state("ctr", "4", "READY")
    assert hooks.passed_over == [("ctr", "3", "superseded by version 4")]
