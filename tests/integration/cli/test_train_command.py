"""``kiln train`` as a real process: it learns from a feedback store and publishes a version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kiln.examples import make_model
from kiln.feedback import FeedbackEvent, FeedbackStore
from kiln.online.world import ClickWorld
from kiln.repository.publish import existing_versions, publish_version
from kiln.train.report import TrainingRecord

pytestmark = pytest.mark.integration


def test_kiln_train_publishes_a_gated_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    publish_version(repo, "ctr", {"model.onnx": make_model("ctr", size="tiny", seed=0).SerializeToString()})
    world = ClickWorld(size="tiny")
    rng = np.random.default_rng(0)
    inputs = world.requests(rng, 600)
    clicks = world.clicks(inputs, 1.0, rng)
    events = [
        FeedbackEvent("ctr", float(c), 0.0, "", {"dense": d.tolist(), "sparse": s.tolist()})
        for c, d, s in zip(clicks, inputs["dense"], inputs["sparse"], strict=True)
    ]
    with FeedbackStore(repo / ".kiln" / "feedback.db") as store:
        store.append(events)
    command = [
        str(Path(sys.executable).parent / "kiln"),
        "train",
        str(repo),
        "--every-samples",
        "500",
        "--max-exports",
        "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    assert "published version 2" in done.stdout
    assert existing_versions(repo / "ctr") == ["1", "2"]
    record = TrainingRecord.read(repo / "ctr" / "2")
    assert record is not None
    assert record.num_samples >= 500


def test_kiln_train_without_a_version_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    command = [str(Path(sys.executable).parent / "kiln"), "train", str(tmp_path / "repo")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "publish version 1 first" in done.stderr
