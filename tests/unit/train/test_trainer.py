from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from conftest import add_feedback
from kiln._clock import FakeClock
from kiln.feedback import FeedbackStore
from kiln.model.fingerprint import fingerprint
from kiln.online.world import ClickWorld
from kiln.repository.publish import existing_versions
from kiln.train import ExportPolicy
from kiln.train.checkpoint import load_checkpoint
from kiln.train.report import TrainingRecord
from kiln.train.trainer import TrainConfig, Trainer


def _config(repo: Path, store: FeedbackStore, **values: object) -> TrainConfig:
    defaults: dict[str, object] = {
        "policy": ExportPolicy(every_samples=500, every_s=1e9),
        "batch_size": 64,
        "holdout_every": 10,
        "min_holdout": 50,
        "max_auc_drop": 1.0,
    }
    return TrainConfig(repo=repo, model="ctr", feedback=store.path, **{**defaults, **values})  # type: ignore[arg-type]


def test_exports_publish_versions_with_the_same_structure(
    repo: Path, store: FeedbackStore, world: ClickWorld
) -> None:
    add_feedback(store, world, 1200, seed=1)
    trainer = Trainer(_config(repo, store), clock=FakeClock(), store=store)
    while trainer.step(max_events=300):
        pass
    assert [r.version for r in trainer.history] == ["2", "3"]
    assert existing_versions(repo / "ctr") == ["1", "2", "3"]
    first, newest = (onnx.load(str(repo / "ctr" / v / "model.onnx")) for v in ("1", "3"))
    assert fingerprint(newest).structure_hash == fingerprint(first).structure_hash
    assert fingerprint(newest).weights_hash != fingerprint(first).weights_hash
    record = TrainingRecord.read(repo / "ctr" / "3")
    assert record is not None
    assert record.offset == trainer.history[-1].training.offset
    assert store.committed("kiln-train") == record.offset


def test_resume_after_a_crash_learns_every_event_exactly_once(
    repo: Path, store: FeedbackStore, world: ClickWorld, tmp_path: Path
) -> None:
    add_feedback(store, world, 1500, seed=2)
    clean = Trainer(_config(repo, store, checkpoint_dir=tmp_path / "clean"), clock=FakeClock(), store=store)
    while clean.step(max_events=250):
        pass
    clean.export()

    crashing = Trainer(
        _config(repo, store, checkpoint_dir=tmp_path / "crash", consumer="crash"),
        clock=FakeClock(),
        store=store,
    )
    while not crashing.history:
        crashing.step(max_events=250)
    crashing.step(max_events=250)  # learned, not checkpointed: lost in the "crash"
    saved = load_checkpoint(tmp_path / "crash")
    assert saved is not None
    assert crashing.offset > saved.offset

    resumed = Trainer(
        _config(repo, store, checkpoint_dir=tmp_path / "crash", consumer="crash"),
        clock=FakeClock(),
        store=store,
    )
    assert resumed.offset == saved.offset
    while resumed.step(max_events=250):
        pass
    resumed.export()
    assert resumed.offset == clean.offset == store.last_offset("ctr")
    assert resumed.num_samples == clean.num_samples  # nothing learned twice, nothing skipped
    assert resumed.num_exports == clean.num_exports


def test_a_regressed_candidate_is_not_published(repo: Path, store: FeedbackStore, world: ClickWorld) -> None:
    add_feedback(store, world, 600, seed=3, drift=0.0)
    trainer = Trainer(_config(repo, store, max_auc_drop=0.0), clock=FakeClock(), store=store)
    trainer.step(max_events=600)
    with np.errstate(all="ignore"):
        for param in trainer.module.parameters():
            param.data.mul_(-1.0)  # a sabotaged model ranks clicks last
    record = trainer.export()
    assert not record.gate.accept
    assert record.version == ""
    assert existing_versions(repo / "ctr") == ["1"]


def test_a_nan_candidate_is_not_published(repo: Path, store: FeedbackStore, world: ClickWorld) -> None:
    add_feedback(store, world, 100, seed=4)
    trainer = Trainer(_config(repo, store), clock=FakeClock(), store=store)
    trainer.step(max_events=100)
    trainer.module.weight("head.bias").data.fill_(float("nan"))
    record = trainer.export()
    assert not record.gate.accept
    assert "not all finite" in record.gate.reason
    assert existing_versions(repo / "ctr") == ["1"]


def test_exports_are_due_after_the_time_interval(repo: Path, store: FeedbackStore, world: ClickWorld) -> None:
    clock = FakeClock()
    trainer = Trainer(
        _config(repo, store, policy=ExportPolicy(every_samples=10**9, every_s=5.0)), clock=clock, store=store
    )
    add_feedback(store, world, 50, seed=5)
    trainer.step()
    assert not trainer.history
    clock.advance(5.0)
    trainer.step()
    assert [r.version for r in trainer.history] == ["2"]


def test_freshness_of_the_next_version_counts_the_events_of_a_rejected_export(
    repo: Path, tmp_path: Path, world: ClickWorld
) -> None:
    now = [1000.0]  # the store's wall clock: when it receives each of the two appends
    with FeedbackStore(tmp_path / "timed.db", wall_clock=lambda: now[0]) as store:
        add_feedback(store, world, 100, seed=6)
        now[0] = 2000.0
        add_feedback(store, world, 100, seed=7)
        trainer = Trainer(_config(repo, store), clock=FakeClock(), store=store)
        trainer.step(max_events=100)
        bias = trainer.module.weight("head.bias")
        kept = bias.data.clone()
        bias.data.fill_(float("nan"))
        rejected = trainer.export()
        assert not rejected.gate.accept
        bias.data.copy_(kept)
        trainer.step(max_events=100)

        published = trainer.export()

    assert published.gate.accept, published.gate.reason
    assert rejected.training.first_new_received_s == 1000.0
    assert published.training.first_new_received_s == 1000.0  # not 2000: nothing served since
