"""``kiln train``: learn from the feedback stream, publish gated versions into the model repository.

One :meth:`Trainer.step`: read the next events after the checkpointed offset, hold every
``holdout_every``-th out for the gate, take Adam steps on the rest (dense layers: Adam; embedding
tables: sparse Adam), and when the export policy says so: write the weights into the ONNX graph
(same structure hash), run it with ONNX Runtime on the holdout, compare its AUC with the last
published version's, checkpoint (weights + offset, atomically), commit the offset in the store,
and publish the version (atomic rename) unless the gate rejects it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from kiln._clock import Clock, MonotonicClock
from kiln.errors import ConfigError, describe
from kiln.feedback import FeedbackStore
from kiln.repository.layout import MODEL_FILE
from kiln.repository.publish import existing_versions, publish_version
from kiln.train.batches import Examples, to_examples
from kiln.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from kiln.train.ctr_module import CtrModule, export_weights, trainable_initializers
from kiln.train.gate import GateInputs, evaluate
from kiln.train.policy import ExportPolicy, GateDecision, decide_gate, is_holdout
from kiln.train.report import TRAINING_FILE, ExportRecord, TrainingRecord

log = logging.getLogger("kiln.train")


@dataclass(frozen=True)
class TrainConfig:
    """What ``kiln train`` learns from and where it publishes.

    Fields:
        repo: the model repository; the newest version of ``model`` is the starting graph.
        model: the served model's name (its feedback stream and its repository folder).
        feedback: the feedback store's SQLite file.
        checkpoint_dir: where the checkpoint lives (default ``repo/.kiln/train/<model>``).
        consumer: the name the offset is committed under in the store.
        batch_size: samples per Adam step.
        learning_rate / embedding_learning_rate: Adam step sizes (dense layers / embedding rows).
        policy: when to export.
        holdout_every / holdout_size / min_holdout: the gate's holdout slice (every n-th event,
            the last ``holdout_size`` of them; fewer than ``min_holdout`` → finite check only).
        max_auc_drop: how far below the last published version's holdout AUC a candidate may be.
        poll_interval_s: wait between reads when the stream has nothing new.
        read_events: events read (and learned) per step at most.
    """

    repo: Path
    model: str
    feedback: Path
    checkpoint_dir: Path | None = None
    consumer: str = "kiln-train"
    batch_size: int = 256
    learning_rate: float = 1e-3
    embedding_learning_rate: float = 1e-2
    policy: ExportPolicy = field(default_factory=ExportPolicy)
    holdout_every: int = 10
    holdout_size: int = 4000
    min_holdout: int = 200
    max_auc_drop: float = 0.01
    poll_interval_s: float = 0.2
    read_events: int = 4096

    def checkpoints(self) -> Path:
        return self.checkpoint_dir or self.repo / ".kiln" / "train" / self.model


class Trainer:
    """The trainer of one model (see the module docstring). Not thread-safe: one loop drives it."""

    def __init__(
        self, config: TrainConfig, *, clock: Clock | None = None, store: FeedbackStore | None = None
    ) -> None:
        self.config = config
        self.clock = clock or MonotonicClock()
        self.store = store or FeedbackStore(config.feedback)
        self.template = _newest_model(config.repo, config.model)
        checkpoint = load_checkpoint(config.checkpoints())
        weights = checkpoint.weights if checkpoint else trainable_initializers(self.template)
        self.offset = checkpoint.offset if checkpoint else self.store.committed(config.consumer)
        self.num_samples = checkpoint.num_samples if checkpoint else 0
        self.num_exports = checkpoint.num_exports if checkpoint else 0
        self.module = CtrModule(weights)
        embeddings = [p for n, p in self.module.params.items() if n.startswith("emb")]
        others = [p for n, p in self.module.params.items() if not n.startswith("emb")]
        self.optimizers: list[torch.optim.Optimizer] = [
            torch.optim.Adam(others, lr=config.learning_rate),
            torch.optim.SparseAdam(embeddings, lr=config.embedding_learning_rate),
        ]
        if checkpoint is not None and checkpoint.optimizers:
            for optimizer, state in zip(self.optimizers, checkpoint.optimizers, strict=True):
                optimizer.load_state_dict(state)
        self.live_model = self.template
        self.holdout: deque[tuple[Array1, Array1, float]] = deque(maxlen=config.holdout_size)
        self.last_export_s = self.clock.now()
        self.samples_since_export = 0
        self.train_seconds = 0.0
        self.first_new_received_s: float | None = None
        self.last_received_s = 0.0
        self.history: list[ExportRecord] = []
        log.info(
            "trainer for %s resumes at offset %d (%d samples learned)",
            config.model,
            self.offset,
            self.num_samples,
        )

    def step(self, max_events: int | None = None) -> int:
        """Learn from up to ``max_events`` new events; export when due. Returns events consumed."""
        limit = max_events or self.config.read_events
        events = self.store.read(self.config.model, self.offset, limit=limit)
        if events:
            examples = to_examples(
                events,
                num_dense=self.module.num_dense(),
                num_tables=self.module.num_tables,
                num_rows=self.module.num_rows(),
            )
            self._learn(examples)
            self.offset = events[-1].offset
        if self.config.policy.due(self.samples_since_export, self.clock.now() - self.last_export_s):
            self.export()
        return len(events)

    def _learn(self, examples: Examples) -> None:
        held = np.array([is_holdout(int(o), self.config.holdout_every) for o in examples.offsets], dtype=bool)
        for i in np.flatnonzero(held):
            self.holdout.append((examples.dense[i], examples.sparse[i], float(examples.labels[i])))
        train = examples.take(~held)
        if len(train) == 0:
            return
        started = time.perf_counter()
        self.module.train()
        for start in range(0, len(train), self.config.batch_size):
            stop = start + self.config.batch_size
            logits = self.module(
                torch.from_numpy(train.dense[start:stop]), torch.from_numpy(train.sparse[start:stop])
            )
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, torch.from_numpy(train.labels[start:stop])
            )
            for optimizer in self.optimizers:
                optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            for optimizer in self.optimizers:
                optimizer.step()
        self.train_seconds += time.perf_counter() - started
        self.num_samples += len(train)
        self.samples_since_export += len(train)
        if self.first_new_received_s is None:
            self.first_new_received_s = float(train.received_s[0])
        self.last_received_s = float(train.received_s[-1])

    def export(self) -> ExportRecord:
        """Gate, checkpoint and (when accepted) publish the current weights as a new version."""
        started = time.perf_counter()
        candidate = export_weights(self.template, self.module.arrays())
        candidate_bytes = candidate.SerializeToString()
        export_s = time.perf_counter() - started
        gate = self.gate(candidate_bytes)
        save_checkpoint(
            self.config.checkpoints(),
            Checkpoint(
                self.offset,
                self.num_samples,
                self.num_exports + 1,
                self.module.arrays(),
                [optimizer.state_dict() for optimizer in self.optimizers],
            ),
        )
        self.store.commit(self.config.consumer, self.offset)
        self.num_exports += 1
        record = TrainingRecord(
            offset=self.offset,
            num_samples=self.num_samples,
            first_new_received_s=self.first_new_received_s or time.time(),
            last_received_s=self.last_received_s,
            train_seconds=self.train_seconds,
            export_seconds=export_s,
            gate_seconds=time.perf_counter() - started - export_s,
            candidate_auc=gate.candidate_auc,
            live_auc=gate.live_auc,
            published_at_s=time.time(),
        )
        version = ""
        if gate.accept:
            published = publish_version(
                self.config.repo,
                self.config.model,
                {MODEL_FILE: candidate_bytes, TRAINING_FILE: record.to_json()},
                tag=f"kiln train: offset {self.offset}",
            )
            version = published.version
            self.live_model = candidate
            log.info("published %s/%s (%s)", self.config.model, version, gate.reason)
        else:
            log.warning("candidate at offset %d rejected: %s", self.offset, gate.reason)
        result = ExportRecord(version=version, gate=gate, training=record)
        self.history.append(result)
        self.last_export_s = self.clock.now()
        self.samples_since_export = 0
        self.train_seconds = 0.0
        if gate.accept:  # a rejected export served nothing: its events still wait to be served
            self.first_new_received_s = None
        return result

    def gate(self, candidate: bytes) -> GateDecision:
        """The candidate (ONNX bytes) against the last published version on the holdout slice."""
        inputs = GateInputs.of(list(self.holdout))
        candidate_auc, finite = evaluate(candidate, inputs)
        live_auc, _ = evaluate(self.live_model.SerializeToString(), inputs)
        return decide_gate(
            candidate_auc=candidate_auc,
            live_auc=live_auc,
            finite=finite,
            num_holdout=len(inputs),
            min_holdout=self.config.min_holdout,
            max_auc_drop=self.config.max_auc_drop,
        )

    def run(self, stop: threading.Event, *, max_exports: int | None = None) -> None:
        """Step until ``stop`` is set (or ``max_exports`` versions were exported)."""
        while not stop.is_set():
            if self.step() == 0:
                stop.wait(self.config.poll_interval_s)
            if max_exports is not None and len(self.history) >= max_exports:
                return

    def close(self) -> None:
        self.store.close()


Array1 = np.ndarray


def _newest_model(repo: Path, model: str) -> onnx.ModelProto:
    versions = existing_versions(Path(repo) / model)
    for version in reversed(versions):
        path = Path(repo) / model / version / MODEL_FILE
        if path.exists():
            return onnx.load(str(path))
    raise ConfigError(
        describe(
            f"the repository has no version of {model!r} to start training from",
            seen=str(Path(repo) / model),
            fix="publish version 1 first (kiln.repository.publish_version)",
        )
    )
