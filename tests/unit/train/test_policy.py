from __future__ import annotations

import math

import numpy as np

from kiln.train import ExportPolicy, decide_gate, is_holdout
from kiln.train.auc import roc_auc


def test_export_is_due_by_samples_or_seconds_but_never_empty() -> None:
    policy = ExportPolicy(every_samples=100, every_s=5.0)
    assert not policy.due(99, 4.9)
    assert policy.due(100, 0.0)
    assert policy.due(1, 5.0)
    assert not policy.due(0, 60.0)


def test_holdout_takes_every_nth_offset() -> None:
    assert [o for o in range(1, 31) if is_holdout(o, 10)] == [10, 20, 30]
    assert not any(is_holdout(o, 0) for o in range(100))


def test_gate_rejects_nan_and_regressions_and_accepts_small_holdouts() -> None:
    common = {"num_holdout": 500, "min_holdout": 200, "max_auc_drop": 0.01}
    assert not decide_gate(candidate_auc=0.9, live_auc=0.7, finite=False, **common).accept
    regressed = decide_gate(candidate_auc=0.68, live_auc=0.7, finite=True, **common)
    assert not regressed.accept
    assert "below the live" in regressed.reason
    assert decide_gate(candidate_auc=0.695, live_auc=0.7, finite=True, **common).accept
    small = decide_gate(
        candidate_auc=0.1, live_auc=0.9, finite=True, num_holdout=10, min_holdout=200, max_auc_drop=0.01
    )
    assert small.accept
    assert "too few" in small.reason


def test_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # ties on purpose
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert math.isclose(roc_auc(labels, scores), pairwise, rel_tol=1e-12)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))
