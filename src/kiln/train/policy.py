"""The trainer's decisions, as pure functions: when to export, whether a candidate may be published,
which events are held out for that check."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExportPolicy:
    """Export a new version every ``every_samples`` trained samples or every ``every_s`` seconds
    (whichever comes first), but never with fewer than ``min_samples`` new samples."""

    every_samples: int = 20_000
    every_s: float = 10.0
    min_samples: int = 1

    def due(self, samples_since: int, seconds_since: float) -> bool:
        if samples_since < max(self.min_samples, 1):
            return False
        return samples_since >= self.every_samples or seconds_since >= self.every_s


def is_holdout(offset: int, every: int) -> bool:
    """Every ``every``-th event (by offset) is kept out of training for the gate (0: none)."""
    return every > 0 and offset % every == 0


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Whether a candidate version may be published, and why."""

    accept: bool
    reason: str
    candidate_auc: float
    live_auc: float
    num_holdout: int


def decide_gate(
    *,
    candidate_auc: float,
    live_auc: float,
    finite: bool,
    num_holdout: int,
    min_holdout: int,
    max_auc_drop: float,
) -> GateDecision:
    """Reject non-finite outputs always; reject an AUC below the live version's by more than
    ``max_auc_drop`` when the holdout has at least ``min_holdout`` events of both classes."""

    def decision(accept: bool, reason: str) -> GateDecision:
        return GateDecision(accept, reason, candidate_auc, live_auc, num_holdout)

    if not finite:
        return decision(False, "the candidate's outputs are not all finite (NaN or inf)")
    if num_holdout < min_holdout or math.isnan(candidate_auc) or math.isnan(live_auc):
        return decision(
            True, f"accepted on finite outputs only: {num_holdout} holdout event(s), too few to compare"
        )
    if candidate_auc < live_auc - max_auc_drop:
        return decision(
            False,
            f"holdout AUC {candidate_auc:.4f} is below the live {live_auc:.4f} by more than {max_auc_drop}",
        )
    return decision(True, f"holdout AUC {candidate_auc:.4f} vs live {live_auc:.4f}")
