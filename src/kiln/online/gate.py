"""The serving gate's decision (pure): may a new version replace the one serving?

The candidate's holdout AUC is compared with the better of the version serving now and the first
version served (so a slow slide of small drops can never take the model below where it started):
a drop beyond ``max_auc_drop`` rejects it, and so does any output that is not finite. With too few
holdout rows (or nothing to compare with) only the finite check applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServingGateDecision:
    """The verdict on a candidate version and the numbers it rests on (NaN: not measured)."""

    accept: bool
    reason: str
    candidate_auc: float
    serving_auc: float
    first_auc: float
    num_holdout: int

    @property
    def reference_auc(self) -> float:
        """The AUC the candidate had to match: the better of the serving and first versions'."""
        known = [a for a in (self.serving_auc, self.first_auc) if not math.isnan(a)]
        return max(known) if known else float("nan")

    def to_json(self) -> dict[str, object]:
        def number(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 6)

        return {
            "accept": self.accept,
            "reason": self.reason,
            "candidate_auc": number(self.candidate_auc),
            "serving_auc": number(self.serving_auc),
            "first_auc": number(self.first_auc),
            "num_holdout": self.num_holdout,
        }


def decide_serving(
    *,
    candidate_auc: float,
    finite: bool,
    serving_auc: float,
    first_auc: float,
    num_holdout: int,
    min_holdout: int,
    max_auc_drop: float,
) -> ServingGateDecision:
    """Reject non-finite outputs; reject an AUC below the reference by more than ``max_auc_drop``."""

    def decision(accept: bool, reason: str) -> ServingGateDecision:
        return ServingGateDecision(accept, reason, candidate_auc, serving_auc, first_auc, num_holdout)

    probe = decision(True, "")
    reference = probe.reference_auc
    if not finite:
        return decision(False, "its outputs on the holdout are not all finite (NaN or inf)")
    if num_holdout < min_holdout or math.isnan(candidate_auc) or math.isnan(reference):
        return decision(True, f"finite outputs; {num_holdout} holdout row(s), too few to compare AUC")
    which = "serving" if reference == serving_auc else "first"
    if candidate_auc < reference - max_auc_drop:
        return decision(
            False,
            f"holdout AUC {candidate_auc:.4f} is below the {which} version's {reference:.4f} "
            f"by more than {max_auc_drop:g} ({num_holdout} rows)",
        )
    return decision(True, f"holdout AUC {candidate_auc:.4f} vs {which} {reference:.4f} ({num_holdout} rows)")
