"""``kiln train`` killed with SIGKILL at arbitrary moments (during training, export, checkpoint or
publication): every version a repository scan could see is complete, and a restarted trainer goes on
from its checkpoint without going back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from kiln.examples import make_model
from kiln.feedback import FeedbackEvent, FeedbackStore
from kiln.online.world import ClickWorld
from kiln.repository.layout import MARKER_FILE, MODEL_FILE, classify
from kiln.repository.publish import publish_version
from kiln.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.integration


def _visible_versions(model_dir: Path) -> list[Path]:
    return [p for p in model_dir.iterdir() if p.is_dir() and classify(p.name) == "version"]


def test_killed_trainer_never_leaves_a_partial_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    publish_version(repo, "ctr", {MODEL_FILE: make_model("ctr", size="tiny", seed=0).SerializeToString()})
    world = ClickWorld(size="tiny")
    rng = np.random.default_rng(0)
    inputs = world.requests(rng, 3000)
    clicks = world.clicks(inputs, 1.0, rng)
    with FeedbackStore(repo / ".kiln" / "feedback.db") as store:
        store.append(
            [
                FeedbackEvent("ctr", float(c), 0.0, "", {"dense": d.tolist(), "sparse": s.tolist()})
                for c, d, s in zip(clicks, inputs["dense"], inputs["sparse"], strict=True)
            ]
        )
    kiln = str(Path(sys.executable).parent / "kiln")
    offsets = []
    for _ in range(3):
        trainer = subprocess.Popen(
            [kiln, "train", str(repo), "--every-samples", "100", "--read-events", "120"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert trainer.stdout is not None
        while "published" not in (line := trainer.stdout.readline()):
            assert line, "the trainer stopped before publishing"
        # Exports follow each other every 100 samples: the kill lands in the next one's work.
        os.kill(trainer.pid, signal.SIGKILL)
        trainer.wait(timeout=30)
        for version in _visible_versions(repo / "ctr"):
            assert (version / MARKER_FILE).exists(), version
            onnx.checker.check_model(onnx.load(str(version / MODEL_FILE)))
        checkpoint = load_checkpoint(repo / ".kiln" / "train" / "ctr")
        offsets.append(checkpoint.offset if checkpoint else 0)
    assert offsets == sorted(offsets)
    assert len(_visible_versions(repo / "ctr")) > 1
