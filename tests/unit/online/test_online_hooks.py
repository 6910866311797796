"""OnlineHooks with a real feedback store and real ONNX models: the gate, the journal, the metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from prometheus_client import CollectorRegistry

from kiln.examples import make_model
from kiln.feedback import FeedbackEvent, FeedbackStore
from kiln.online.holdout import HoldoutScorer
from kiln.online.journal import journal_path, read_journal
from kiln.online.loop import OnlineGateConfig, OnlineHooks
from kiln.online.metrics import ServingLoopMetrics
from kiln.online.world import ClickWorld
from kiln.repository.hooks import ServingVersion
from kiln.repository.layout import MODEL_FILE
from kiln.repository.publish import publish_version
from kiln.train.report import TRAINING_FILE, TrainingRecord


def _nan_model() -> bytes:
    model = make_model("ctr", size="tiny")
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(tensor)
            model.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(np.full_like(values, np.nan), tensor.name)
            )
    return bytes(model.SerializeToString())


def _store(path: Path, count: int) -> FeedbackStore:
    world = ClickWorld(size="tiny")
    rng = np.random.default_rng(1)
    inputs = world.requests(rng, count)
    clicks = world.clicks(inputs, 0.0, rng)
    store = FeedbackStore(path)
    store.append(
        [
            FeedbackEvent("ctr", float(c), 0.0, "", {"dense": d.tolist(), "sparse": s.tolist()})
            for c, d, s in zip(clicks, inputs["dense"], inputs["sparse"], strict=True)
        ]
    )
    return store


def _record(published_at_s: float) -> bytes:
    return TrainingRecord(10, 10, 100.0, 101.0, 0.1, 0.1, 0.1, 0.7, 0.7, published_at_s).to_json()


def test_gate_journal_and_metrics(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    store = _store(tmp_path / "fb.db", 3000)
    registry = CollectorRegistry()
    hooks = OnlineHooks(
        repo,
        store,
        OnlineGateConfig(min_holdout=100),
        metrics=ServingLoopMetrics(registry),
        wall_clock=lambda: 110.0,
    )
    truth = make_model("ctr", size="tiny", seed=0).SerializeToString()
    first = publish_version(repo, "ctr", {MODEL_FILE: truth})
    assert hooks.before_build("ctr", "1", first.path).accept
    hooks.on_serving(ServingVersion("ctr", "1", first.path, "build", 0.5, 0.8, 0.01))

    good = publish_version(repo, "ctr", {MODEL_FILE: truth, TRAINING_FILE: _record(105.0)})
    verdict = hooks.before_build("ctr", good.version, good.path)
    assert verdict.accept, verdict.reason
    hooks.on_serving(ServingVersion("ctr", good.version, good.path, "refit", 0.2, 0.3, 0.01))

    worse = make_model("ctr", size="tiny", seed=5).SerializeToString()  # other weights: worse AUC
    bad = publish_version(repo, "ctr", {MODEL_FILE: worse})
    rejected = hooks.before_build("ctr", bad.version, bad.path)
    assert not rejected.accept
    assert "holdout AUC" in rejected.reason
    hooks.on_failed("ctr", bad.version, rejected.reason)

    broken = publish_version(repo, "ctr", {MODEL_FILE: _nan_model()})
    nan = hooks.before_build("ctr", broken.version, broken.path)
    assert not nan.accept
    assert "not all finite" in nan.reason

    lines = read_journal(journal_path(repo, "ctr"))
    assert [(line["version"], line["outcome"]) for line in lines] == [
        ("1", "serving"),
        ("2", "serving"),
        ("3", "rejected"),
        ("4", "rejected"),
    ]
    assert lines[1]["publish_to_serving_seconds"] == 5.0
    assert lines[1]["freshness_seconds"] == 10.0
    assert lines[1]["build_path"] == "refit"
    assert lines[1]["gate"]["accept"] is True
    assert (
        registry.get_sample_value("kiln_online_versions_total", {"model": "ctr", "outcome": "rejected"}) == 2
    )
    assert registry.get_sample_value("kiln_online_builds_total", {"model": "ctr", "path": "refit"}) == 1
    assert registry.get_sample_value("kiln_online_publish_to_serving_seconds_count", {"model": "ctr"}) == 2
    steps = "kiln_online_serving_step_seconds"
    assert registry.get_sample_value(f"{steps}_count", {"model": "ctr", "step": "check"}) == 4
    assert registry.get_sample_value(f"{steps}_sum", {"model": "ctr", "step": "build"}) == pytest.approx(0.7)
    assert registry.get_sample_value(f"{steps}_sum", {"model": "ctr", "step": "ready"}) == pytest.approx(1.1)
    store.close()


def test_a_restarted_server_keeps_the_first_version_as_reference(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    store = _store(tmp_path / "fb.db", 3000)
    truth = make_model("ctr", size="tiny", seed=0).SerializeToString()
    first = publish_version(repo, "ctr", {MODEL_FILE: truth})
    OnlineHooks(repo, store).on_serving(ServingVersion("ctr", "1", first.path, "build", 0.5, 0.8, 0.0))
    again = OnlineHooks(repo, store, OnlineGateConfig(min_holdout=100))  # nothing serving yet
    worse = publish_version(
        repo, "ctr", {MODEL_FILE: make_model("ctr", size="tiny", seed=5).SerializeToString()}
    )
    verdict = again.before_build("ctr", worse.version, worse.path)
    assert not verdict.accept
    assert "below the serving version's" in verdict.reason  # version 1: the first and the last served
    store.close()


def test_a_restarted_server_compares_with_the_version_that_served_last(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    store = _store(tmp_path / "fb.db", 3000)
    before = OnlineHooks(repo, store)
    worse = publish_version(
        repo, "ctr", {MODEL_FILE: make_model("ctr", size="tiny", seed=5).SerializeToString()}
    )
    before.on_serving(ServingVersion("ctr", worse.version, worse.path, "build", 0.5, 0.8, 0.0))
    truth = publish_version(
        repo, "ctr", {MODEL_FILE: make_model("ctr", size="tiny", seed=0).SerializeToString()}
    )
    before.on_serving(ServingVersion("ctr", truth.version, truth.path, "refit", 0.2, 0.3, 0.0))
    after = OnlineHooks(repo, store, OnlineGateConfig(min_holdout=100))  # restarted: nothing serves

    verdict = after.before_build("ctr", "3", worse.path)  # version 1's weights again

    assert not verdict.accept
    assert "below the serving version's" in verdict.reason
    store.close()


def test_a_version_built_while_a_newer_one_came_to_serve_is_journaled_as_superseded(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    store = _store(tmp_path / "fb.db", 3000)
    registry = CollectorRegistry()
    hooks = OnlineHooks(repo, store, OnlineGateConfig(min_holdout=100), metrics=ServingLoopMetrics(registry))
    truth = make_model("ctr", size="tiny", seed=0).SerializeToString()
    first = publish_version(repo, "ctr", {MODEL_FILE: truth})
    assert hooks.before_build("ctr", "1", first.path).accept
    second = publish_version(repo, "ctr", {MODEL_FILE: truth, TRAINING_FILE: _record(105.0)})
    assert hooks.before_build("ctr", "2", second.path).accept
    hooks.on_serving(ServingVersion("ctr", "2", second.path, "build", 0.5, 0.8, 0.01))
    hooks.on_superseded("ctr", "1", "superseded by version 2 while building")

    lines = read_journal(journal_path(repo, "ctr"))
    assert [(line["version"], line["outcome"]) for line in lines] == [("2", "serving"), ("1", "superseded")]
    assert lines[1]["reason"] == "superseded by version 2 while building"
    assert lines[1]["gate"]["accept"] is True
    outcome = {"model": "ctr", "outcome": "superseded"}
    assert registry.get_sample_value("kiln_online_versions_total", outcome) == 1
    store.close()


def test_a_version_saved_with_every_tensor_external_is_scored_like_the_inline_one(tmp_path: Path) -> None:
    store = _store(tmp_path / "fb.db", 1000)
    events = store.read_holdout("ctr", every=10, limit=1000)
    inline = tmp_path / "inline" / MODEL_FILE
    external = tmp_path / "external" / MODEL_FILE
    for path in (inline, external):
        path.parent.mkdir()
    onnx.save_model(make_model("ctr", size="tiny"), str(inline))
    onnx.save_model(
        make_model("ctr", size="tiny"), str(external), save_as_external_data=True,
        all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0,
    )  # fmt: skip
    scorer = HoldoutScorer()

    got, want = scorer.score(external, events), scorer.score(inline, events)

    assert want.num_rows > 0
    assert want.finite
    assert (got.auc, got.finite, got.num_rows) == (want.auc, want.finite, want.num_rows)
    store.close()
