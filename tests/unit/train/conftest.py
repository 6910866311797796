from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kiln.examples import make_model
from kiln.feedback import FeedbackEvent, FeedbackStore
from kiln.online.world import ClickWorld
from kiln.repository.publish import publish_version


@pytest.fixture(scope="session")
def world() -> ClickWorld:
    return ClickWorld(size="tiny", seed=0)


def add_feedback(
    store: FeedbackStore, world: ClickWorld, count: int, *, seed: int, drift: float = 1.0
) -> None:
    rng = np.random.default_rng(seed)
    inputs = world.requests(rng, count)
    clicks = world.clicks(inputs, drift, rng)
    store.append(
        [
            FeedbackEvent(
                "ctr",
                float(clicks[i]),
                0.0,
                f"r{seed}-{i}",
                {"dense": inputs["dense"][i].tolist(), "sparse": inputs["sparse"][i].tolist()},
            )
            for i in range(count)
        ]
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    publish_version(root, "ctr", {"model.onnx": make_model("ctr", size="tiny", seed=0).SerializeToString()})
    return root


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    with FeedbackStore(tmp_path / "feedback.db") as opened:
        yield opened
