"""The serving gate's decision: finite outputs, AUC against the better of serving and first."""

from __future__ import annotations

import math

from kiln.online.gate import decide_serving

NAN = float("nan")


def decide(candidate: float, serving: float, first: float, *, finite: bool = True, rows: int = 500) -> bool:
    return decide_serving(
        candidate_auc=candidate,
        finite=finite,
        serving_auc=serving,
        first_auc=first,
        num_holdout=rows,
        min_holdout=200,
        max_auc_drop=0.01,
    ).accept


def test_a_drop_beyond_the_bound_from_the_better_reference_is_rejected() -> None:
    assert decide(0.75, 0.755, 0.70)
    assert not decide(0.74, 0.755, 0.70)
    assert not decide(0.74, 0.70, 0.755)  # the first version is the better reference


def test_non_finite_outputs_are_rejected_even_without_a_holdout() -> None:
    assert not decide(NAN, NAN, NAN, finite=False, rows=0)
    assert not decide(NAN, 0.7, 0.7, finite=False)


def test_too_few_rows_or_nothing_to_compare_accepts_on_finite_outputs() -> None:
    assert decide(0.5, 0.9, 0.9, rows=10)
    assert decide(0.5, NAN, NAN)


def test_the_reason_names_the_numbers() -> None:
    decision = decide_serving(
        candidate_auc=0.6,
        finite=True,
        serving_auc=0.7,
        first_auc=NAN,
        num_holdout=300,
        min_holdout=200,
        max_auc_drop=0.01,
    )
    assert "0.6000" in decision.reason
    assert "serving version's 0.7000" in decision.reason
    assert decision.to_json()["first_auc"] is None
    assert math.isclose(decision.reference_auc, 0.7)
