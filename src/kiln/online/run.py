"""The whole online loop on one machine: a fresh model repository holding version 1 of the
``ctr`` example, ``kiln serve --feedback`` and ``kiln train`` as child processes, and
:class:`~kiln.online.traffic.Traffic` clients sending requests and clicks from a drifting
:class:`~kiln.online.world.ClickWorld`. :func:`run_loop` returns everything a report needs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiln.errors import ConfigError, describe
from kiln.online.journal import journal_path, read_journal
from kiln.online.procs import start_server, start_trainer
from kiln.online.traffic import Answer, Traffic
from kiln.online.world import ClickWorld
from kiln.repository.layout import MODEL_FILE
from kiln.repository.publish import publish_version
from kiln.types import Array

MODEL = "ctr"


@dataclass(frozen=True)
class LoopConfig:
    """One run of the loop.

    Fields:
        duration_s: how long the clients send traffic.
        rate_per_s: requests per second, all clients together (each answer's click is fed back).
        clients: client threads.
        size: the ``ctr`` example's size (``tiny`` or ``full``).
        every_s / every_samples: the trainer exports after this many seconds or new samples.
        max_auc_drop: the trainer's and the server's gate bound.
        drift_from / drift_to: the users' interests drift linearly between these fractions of
            the run (0 before, 1 after).
        strength: the drift's logit shift per drifting table (``ClickWorld.strength``).
        min_holdout: the server gate compares AUCs from this many holdout events on.
        learning_rate / embedding_learning_rate / batch_size: the trainer's Adam settings
            (faster than ``kiln train``'s defaults, so that a short run follows the drift).
        seed: seeds the clients' traffic.
    """

    duration_s: float = 60.0
    rate_per_s: float = 100.0
    clients: int = 4
    size: str = "tiny"
    every_s: float = 2.0
    every_samples: int = 100_000
    max_auc_drop: float = 0.01
    drift_from: float = 0.05
    drift_to: float = 0.3
    strength: float = 3.0
    min_holdout: int = 100
    learning_rate: float = 1e-3
    embedding_learning_rate: float = 2e-2
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("duration_s", self.duration_s, 1.0, 86_400.0),
            ("rate_per_s", self.rate_per_s, 1.0, 10_000.0),
            ("clients", self.clients, 1, 64),
            ("every_s", self.every_s, 0.1, 3600.0),
        )
        for name, value, low, high in checks:
            if not low <= value <= high:
                raise ConfigError(describe(f"{name} is out of range", seen=value, fix=f"use {low}..{high}"))
        if self.size not in ("tiny", "full"):
            raise ConfigError(describe("unknown ctr size", seen=self.size, fix="use tiny or full"))

    def drift(self, elapsed_s: float) -> float:
        start, end = self.drift_from * self.duration_s, self.drift_to * self.duration_s
        return float(np.clip((elapsed_s - start) / max(end - start, 1e-9), 0.0, 1.0))


@dataclass
class LoopResult:
    """What a run left: every answer, the clients' inputs, the journal, the acknowledged feedback."""

    config: LoopConfig
    started_s: float
    ended_s: float
    answers: list[Answer]
    dense: Array
    sparse: Array
    journal: list[dict[str, Any]]
    acked_events: int
    feedback_errors: list[str]
    frozen_scores: Array = field(default_factory=lambda: np.zeros(0))
    work: Path = Path()


def prepare_repository(work: Path, size: str) -> Path:
    """``work/repo`` afresh with version 1 of ``ctr`` (the truth before the drift)."""
    repo = work / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    world = ClickWorld(size=size)
    publish_version(repo, MODEL, {MODEL_FILE: world.model.SerializeToString()}, tag="version 1")
    return repo


def run_loop(
    config: LoopConfig, work: Path, *, progress: Callable[[float, str], None] | None = None
) -> LoopResult:
    """Run the loop for ``config.duration_s`` in ``work`` (its ``repo``, ``cache`` and logs are
    replaced; the engine cache is kept between runs) and return what happened."""
    work.mkdir(parents=True, exist_ok=True)
    repo = prepare_repository(work, config.size)
    feedback = repo / ".kiln" / "feedback.db"
    world = ClickWorld(size=config.size, strength=config.strength)
    say = progress or (lambda _f, _m: None)
    say(0.0, "starting kiln serve")
    server = start_server(
        repo,
        feedback,
        work / "cache",
        max_auc_drop=config.max_auc_drop,
        min_holdout=config.min_holdout,
        log=work / "serve.log",
    )
    trainer = None
    traffic: Traffic | None = None
    try:
        server.child.wait_line(r"kiln ready:")
        say(0.0, "starting kiln train")
        trainer = start_trainer(
            repo,
            feedback,
            every_samples=config.every_samples,
            every_s=config.every_s,
            max_auc_drop=config.max_auc_drop,
            learning_rate=config.learning_rate,
            embedding_learning_rate=config.embedding_learning_rate,
            batch_size=config.batch_size,
            log=work / "train.log",
        )
        traffic = Traffic(
            server.http_url,
            world,
            rate_per_s=config.rate_per_s,
            clients=config.clients,
            drift=config.drift,
            seed=config.seed,
        ).start()
        end = time.monotonic() + config.duration_s
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 1.0))
            done = 1.0 - max(left - 1.0, 0.0) / config.duration_s
            served = sum(
                1 for line in read_journal(journal_path(repo, MODEL)) if line["outcome"] == "serving"
            )
            say(done, f"{served - 1} swap(s)")
        traffic.stop()
    finally:
        if traffic is not None:
            traffic.stop()
        if trainer is not None:
            trainer.stop()
        server.child.stop()
    return _result(config, traffic, repo, world, work)


def _result(config: LoopConfig, traffic: Traffic, repo: Path, world: ClickWorld, work: Path) -> LoopResult:
    answers = traffic.answers()
    inputs = [traffic.inputs(i) for i in range(len(traffic.logs))]
    dense = np.stack([inputs[a.client][0][a.row] for a in answers]) if answers else np.zeros((0, 13))
    sparse = np.stack([inputs[a.client][1][a.row] for a in answers]) if answers else np.zeros((0, 26))
    from kiln.examples._ort import Runner  # noqa: PLC0415

    frozen = (
        Runner(world.model).run({"dense": dense, "sparse": sparse.astype(np.int64)})[0].reshape(-1)
        if answers
        else np.zeros(0)
    )
    return LoopResult(
        config=config,
        started_s=traffic.started_s,
        ended_s=time.time(),
        answers=answers,
        dense=dense,
        sparse=sparse,
        journal=read_journal(journal_path(repo, MODEL)),
        acked_events=sum(entry.acked_events for entry in traffic.logs),
        feedback_errors=[e for entry in traffic.logs for e in entry.feedback_errors],
        frozen_scores=frozen,
        work=work,
    )
