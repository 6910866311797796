"""The online loop end to end with real processes: ``kiln serve --feedback`` on loopback, ``kiln
train`` learning from the feedback the clients send, clients sending requests without pause.

Hot swaps under load lose no request and every answer comes from a version that went READY; a
version that outputs NaN is rejected and never serves; a trainer killed with SIGKILL leaves no
partial version to load; a server killed with SIGKILL keeps every acknowledged feedback event and,
restarted, serves the newest good version; after the drift the live model beats a frozen copy of
version 1."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from kiln.examples._ort import Runner
from kiln.feedback import FeedbackEvent, FeedbackStore
from kiln.online.journal import journal_path, read_journal
from kiln.online.procs import Child, ServerChild, start_server, start_trainer
from kiln.online.run import prepare_repository
from kiln.online.traffic import Traffic
from kiln.online.world import ClickWorld
from kiln.repository.layout import MARKER_FILE, MODEL_FILE, classify
from kiln.repository.publish import existing_versions, publish_version
from kiln.train.auc import roc_auc

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def journal(repo: Path, outcome: str) -> list[str]:
    return [line["version"] for line in read_journal(journal_path(repo, "ctr")) if line["outcome"] == outcome]


def learned(repo: Path) -> float:
    """The highest feedback offset a serving version learned up to."""
    lines = read_journal(journal_path(repo, "ctr"))
    return max((line.get("offset") or 0 for line in lines if line["outcome"] == "serving"), default=0)


def index(server: ServerChild) -> dict[str, tuple[str, str]]:
    entries = httpx.post(f"http://{server.http_url}/v2/repository/index", json={}, timeout=10).json()
    return {e["version"]: (e["state"], e.get("reason", "")) for e in entries if e["name"] == "ctr"}


def nan_model(size: str = "tiny") -> bytes:
    model = ClickWorld(size=size).model
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.data_type == onnx.TensorProto.FLOAT:
            nan = np.full_like(numpy_helper.to_array(tensor), np.nan)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(nan, tensor.name))
    return bytes(model.SerializeToString())


def seed_feedback(feedback: Path, world: ClickWorld, count: int) -> None:
    """Clicks of the drifted world already in the stream when the trainer starts."""
    rng = np.random.default_rng(11)
    inputs = world.requests(rng, count)
    clicks = world.clicks(inputs, 1.0, rng)
    with FeedbackStore(feedback) as store:
        store.append(
            [
                FeedbackEvent("ctr", float(c), time.time(), "", {"dense": d.tolist(), "sparse": s.tolist()})
                for c, d, s in zip(clicks, inputs["dense"], inputs["sparse"], strict=True)
            ]
        )


@contextmanager
def loop(
    tmp_path: Path, *, every_samples: int, read_events: int, history: ClickWorld | None = None
) -> Iterator[tuple[Path, ServerChild, Child]]:
    repo = prepare_repository(tmp_path, "tiny")
    feedback = repo / ".kiln" / "feedback.db"
    if history is not None:
        seed_feedback(feedback, history, 20_000)
    server = start_server(repo, feedback, tmp_path / "cache", log=tmp_path / "serve.log")
    trainer: Child | None = None
    try:
        server.child.wait_line("kiln ready:")
        wait_for(lambda: index(server).get("1", ("",))[0] == "READY", 120, "ctr 1 READY")
        trainer = start_trainer(
            repo, feedback, every_samples=every_samples, every_s=0.5, read_events=read_events
        )
        yield repo, server, trainer
    finally:
        if trainer is not None:
            trainer.kill()
        server.child.kill()


def test_hot_swaps_under_load_reject_nan_and_follow_the_drift(tmp_path: Path) -> None:
    world = ClickWorld(size="tiny", strength=3.0)
    with loop(tmp_path, every_samples=100_000, read_events=4096, history=world) as (repo, server, trainer):
        traffic = Traffic(server.http_url, world, rate_per_s=150, clients=3, drift=lambda _: 1.0).start()
        try:
            wait_for(lambda: len(journal(repo, "serving")) >= 5, 90, "four swaps under load")
            trainer.pause()  # so that no newer version supersedes the NaN one before it is checked
            broken = publish_version(repo, "ctr", {MODEL_FILE: nan_model()})
            wait_for(lambda: broken.version in journal(repo, "rejected"), 30, "the NaN version's rejection")
            trainer.resume()
            after = int(broken.version)
            wait_for(
                lambda: sum(int(v) > after for v in journal(repo, "serving")) >= 2,
                60,
                "two swaps after the NaN version",
            )
            wait_for(lambda: learned(repo) >= 20_000, 60, "a version serving that learned the history")
            state, reason = index(server)[broken.version]
        finally:
            traffic.stop()
    answers = traffic.answers()
    assert [a.error for a in answers if a.error] == []
    assert sum(e.acked_events for e in traffic.logs) > 0
    assert [e.feedback_errors for e in traffic.logs] == [[]] * 3
    served = set(journal(repo, "serving"))
    assert {a.version for a in answers} <= served  # every answer from a version that went READY
    paths = {
        line["version"]: line["build_path"]
        for line in read_journal(journal_path(repo, "ctr"))
        if line["outcome"] == "serving" and line["version"] != "1"
    }
    assert paths
    assert set(paths.values()) == {"refit"}, paths  # a weight-only update is never a full build
    assert broken.version not in {a.version for a in answers}
    assert state == "FAILED"
    assert "online gate" in reason
    assert "not all finite" in reason
    for entry in traffic.logs:  # versions only move forward, per client
        numbers = [int(a.version) for a in entry.answers]
        assert numbers == sorted(numbers)
    # The version serving at the end learned the drifted clicks: it ranks them better than
    # version 1 (the truth before the drift), on fresh traffic of the drifted world.
    newest = max(served, key=int)
    rng = np.random.default_rng(2)
    fresh = world.requests(rng, 20_000)
    clicks = world.clicks(fresh, 1.0, rng)
    live = roc_auc(clicks, _score(onnx.load(str(repo / "ctr" / newest / MODEL_FILE)), fresh))
    frozen = roc_auc(clicks, _score(ClickWorld(size="tiny").model, fresh))
    assert live > frozen + 0.01, (live, frozen)


def test_killed_trainer_and_killed_server_lose_nothing(tmp_path: Path) -> None:
    world = ClickWorld(size="tiny")
    with loop(tmp_path, every_samples=60, read_events=80) as (repo, server, first):
        traffic = Traffic(server.http_url, world, rate_per_s=150, clients=2).start()
        trainers = [first]
        try:
            for _ in range(3):  # exports follow each other every 60 samples: kills land mid-export
                trainers[-1].wait_line("published version", 60)
                trainers[-1].kill()
                trainers.append(
                    start_trainer(
                        repo, repo / ".kiln" / "feedback.db", every_samples=60, every_s=0.5, read_events=80
                    )
                )
            wait_for(lambda: len(journal(repo, "serving")) >= 4, 60, "versions from the restarted trainers")
        finally:
            for trainer in trainers:
                trainer.kill()
        for version in index(server):  # the index only ever holds complete version folders
            assert (repo / "ctr" / version / MARKER_FILE).is_file()
        for version in journal(repo, "serving"):
            onnx.checker.check_model(onnx.load(str(repo / "ctr" / version / MODEL_FILE)))
        broken = publish_version(repo, "ctr", {MODEL_FILE: nan_model()})
        wait_for(lambda: broken.version in journal(repo, "rejected"), 30, "the NaN version's rejection")
        server.child.kill()  # SIGKILL while the clients still send requests and feedback
        traffic.stop()
    acked = sorted(o for e in traffic.logs for o in e.acked_offsets)
    assert acked
    with FeedbackStore(repo / ".kiln" / "feedback.db") as store:
        offsets = {e.offset for e in store.read("ctr", after=0, limit=1_000_000)}
    assert set(range(1, acked[-1] + 1)) <= offsets  # every acknowledged event (and all before it)
    versions = existing_versions(repo / "ctr")
    for name in (repo / "ctr").iterdir():  # a killed export leaves at most hidden temporary folders
        assert classify(name.name) in ("version", "temporary"), name
    newest_good = max((v for v in versions if v != broken.version), key=int)
    restarted = start_server(repo, repo / ".kiln" / "feedback.db", tmp_path / "cache")
    try:
        restarted.child.wait_line("kiln ready:", 90)
        wait_for(
            lambda: index(restarted).get(newest_good, ("",))[0] == "READY", 60, f"ctr {newest_good} READY"
        )
        reply = httpx.post(
            f"http://{restarted.http_url}/v2/models/ctr/infer",
            json={"inputs": _json_inputs(world)},
            timeout=10,
        )
        assert reply.json()["model_version"] == newest_good
        assert index(restarted)[broken.version][0] == "FAILED"
    finally:
        restarted.child.kill()


def _score(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return Runner(model).run(inputs)[0].reshape(-1)


def _json_inputs(world: ClickWorld) -> list[dict[str, object]]:
    block = world.requests(np.random.default_rng(9), 1)
    return [
        {"name": "dense", "shape": [1, 13], "datatype": "FP32", "data": block["dense"].reshape(-1).tolist()},
        {
            "name": "sparse",
            "shape": [1, 26],
            "datatype": "INT64",
            "data": block["sparse"].reshape(-1).tolist(),
        },
    ]
