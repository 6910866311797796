"""The online loop inside the server: :class:`OnlineHooks` are the model repository's
:class:`~kiln.repository.hooks.VersionHooks` for models that learn from their feedback.

* **Before a build** the candidate's ``model.onnx`` is scored with ONNX Runtime on the holdout
  slice (the newest labelled feedback events whose offset is a multiple of ``holdout_every``: the
  trainer never learns from those), as are the version serving now and the first version served;
  :func:`~kiln.online.gate.decide_serving` decides. A rejected version is never built or served.
* **When a version serves** its journal line is written (published time and freshness from its
  ``training.json``, gate result, build path and seconds, serving time) and the metrics observed.
* **When it fails** (rejected, or its build or load failed) that goes into the journal too, and so
  does a version **superseded** while it waited for its build or was building (a newer one was
  chosen instead).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.feedback import FeedbackStore
from kiln.online.gate import ServingGateDecision, decide_serving
from kiln.online.holdout import HoldoutScorer
from kiln.online.journal import Journal
from kiln.online.metrics import ServingLoopMetrics
from kiln.repository.hooks import ServingVersion, VersionVerdict
from kiln.repository.layout import MODEL_FILE
from kiln.repository.publish import METADATA_FILE
from kiln.train.report import TrainingRecord

log = logging.getLogger("kiln.online")


@dataclass(frozen=True, slots=True)
class OnlineGateConfig:
    """The serving gate's knobs.

    Fields:
        max_auc_drop: how far below the better of the serving and first versions' holdout AUC a
            candidate may be.
        holdout_every: the holdout is the events whose offset is a multiple of this (the
            trainer's ``holdout_every``).
        holdout_size: the newest this many holdout events are scored.
        min_holdout: with fewer rows, only the finite check applies.
    """

    max_auc_drop: float = 0.01
    holdout_every: int = 10
    holdout_size: int = 2000
    min_holdout: int = 200


class OnlineHooks:
    """The gate, journal and metrics of the online loop (see the module docstring). Thread-safe."""

    def __init__(
        self,
        repo: Path,
        store: FeedbackStore,
        config: OnlineGateConfig | None = None,
        *,
        metrics: ServingLoopMetrics | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = Path(repo)
        self.store = store
        self.config = config or OnlineGateConfig()
        self.metrics = metrics
        self.journal = Journal(self.repo)
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._scorer = HoldoutScorer()
        self._serving: dict[str, Path] = {}
        self._first: dict[str, Path] = {}
        self._gates: dict[tuple[str, str], ServingGateDecision] = {}

    def before_build(self, model: str, version: str, folder: Path) -> VersionVerdict:
        started = time.perf_counter()
        with self._lock:
            decision = self._gate(model, folder)
            self._gates[(model, version)] = decision
        if self.metrics is not None:
            self.metrics.steps.labels(model, "check").observe(time.perf_counter() - started)
        log.info("%s/%s: %s", model, version, decision.reason)
        if not decision.accept:
            self._count(model, "rejected")
            self.journal.append(
                model,
                {
                    "version": version,
                    "outcome": "rejected",
                    **self._published(folder),
                    "gate": decision.to_json(),
                    "reason": decision.reason,
                },
            )
        return VersionVerdict(decision.accept, f"online gate: {decision.reason}")

    def on_serving(self, event: ServingVersion) -> None:
        now = self._wall_clock()
        with self._lock:
            self._serving[event.model] = event.folder
            self._first.setdefault(event.model, self._served(event.model, last=False) or event.folder)
            gate = self._gates.pop((event.model, event.version), None)
        published = self._published(event.folder)
        line: dict[str, Any] = {
            "version": event.version,
            "outcome": "serving",
            **published,
            "gate": gate.to_json() if gate is not None else None,
            "check_seconds": round(event.check_seconds, 6),
            "build_path": event.path,
            "build_seconds": round(event.build_seconds, 6),
            "ready_seconds": round(event.ready_seconds, 6),
            "serving_at_s": now,
        }
        published_at, first_new = published.get("published_at_s"), published.get("first_new_received_s")
        if published_at is not None:
            line["publish_to_serving_seconds"] = max(0.0, now - published_at)
        if first_new is not None:
            line["freshness_seconds"] = max(0.0, now - first_new)
        self.journal.append(event.model, line)
        self._count(event.model, "serving")
        if self.metrics is not None:
            self.metrics.builds.labels(event.model, event.path).inc()
            self.metrics.steps.labels(event.model, "build").observe(event.build_seconds)
            self.metrics.steps.labels(event.model, "ready").observe(event.ready_seconds)
            if "publish_to_serving_seconds" in line:
                self.metrics.publish_to_serving.labels(event.model).observe(
                    line["publish_to_serving_seconds"]
                )
            if "freshness_seconds" in line:
                self.metrics.freshness.labels(event.model).observe(line["freshness_seconds"])

    def on_failed(self, model: str, version: str, reason: str) -> None:
        with self._lock:
            gate = self._gates.pop((model, version), None)
        if gate is not None and not gate.accept:
            return  # journaled and counted as rejected
        self._count(model, "failed")
        folder = self.repo / model / version
        self.journal.append(
            model, {"version": version, "outcome": "failed", **self._published(folder), "reason": reason}
        )

    def on_superseded(self, model: str, version: str, reason: str) -> None:
        with self._lock:
            gate = self._gates.pop((model, version), None)
        self._count(model, "superseded")
        folder = self.repo / model / version
        line: dict[str, Any] = {"version": version, "outcome": "superseded", **self._published(folder)}
        line |= {"gate": gate.to_json() if gate is not None else None, "reason": reason}
        self.journal.append(model, line)

    # -- helpers -------------------------------------------------------------------------------

    def _gate(self, model: str, folder: Path) -> ServingGateDecision:
        config = self.config
        events = self.store.read_holdout(model, every=config.holdout_every, limit=config.holdout_size)
        candidate = self._scorer.score(folder / MODEL_FILE, events)
        serving = self._score_of(self._serving.get(model) or self._served(model, last=True), events)
        first = self._score_of(self._first.get(model) or self._served(model, last=False), events)
        self._scorer.forget(
            {p / MODEL_FILE for p in self._serving.values()} | {p / MODEL_FILE for p in self._first.values()}
        )
        return decide_serving(
            candidate_auc=candidate.auc,
            finite=candidate.finite,
            serving_auc=serving,
            first_auc=first,
            num_holdout=candidate.num_rows,
            min_holdout=config.min_holdout,
            max_auc_drop=config.max_auc_drop,
        )

    def _score_of(self, folder: Path | None, events: list[Any]) -> float:
        if folder is None or not (folder / MODEL_FILE).is_file():
            return float("nan")
        score = self._scorer.score(folder / MODEL_FILE, events)
        return score.auc if score.finite else float("nan")

    def _served(self, model: str, *, last: bool) -> Path | None:
        """The first (or last) version the journal says served whose folder is still there.

        A restarted server keeps both references: until a version serves in this process, the
        candidate is compared with what served last before the restart, not only with the first.
        """
        lines = [line for line in self.journal.read(model) if line.get("outcome") == "serving"]
        for line in reversed(lines) if last else lines:
            folder = self.repo / model / str(line.get("version"))
            if (folder / MODEL_FILE).is_file():
                return folder
        return None

    def _count(self, model: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.versions.labels(model, outcome).inc()

    @staticmethod
    def _published(folder: Path) -> dict[str, float | None]:
        """When the version was published and the oldest event it newly learned was received."""
        record = TrainingRecord.read(folder)
        if record is not None:
            return {
                "published_at_s": record.published_at_s,
                "first_new_received_s": record.first_new_received_s,
                "offset": float(record.offset),
            }
        try:
            published = json.loads((folder / METADATA_FILE).read_text()).get("published_at")
        except (OSError, ValueError):
            published = None
        valid = isinstance(published, int | float) and math.isfinite(published)
        return {"published_at_s": float(published) if valid else None}
