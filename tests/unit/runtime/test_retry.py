from __future__ import annotations

import pytest

from kiln.errors import DeadlineExceeded, EngineDead, EngineFailed, InvalidInput, NotReady
from kiln.runtime.retry import ErrorClass, RetryAction, classify, decide_retry

C, A = ErrorClass, RetryAction


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InvalidInput("bad"), C.INVALID_INPUT),
        (EngineFailed("flaky"), C.TRANSIENT),
        (EngineDead("gone"), C.FATAL),
        (NotReady("closed"), C.FINAL),
        (DeadlineExceeded("late"), C.FINAL),
        (RuntimeError("library error"), C.TRANSIENT),
    ],
)
def test_classify(error: Exception, expected: ErrorClass) -> None:
    assert classify(error) is expected


def decide(cls: ErrorClass, **overrides: object) -> RetryAction:
    args: dict[str, object] = {
        "attempt": 0,
        "max_retries": 2,
        "now_s": 10.0,
        "deadline_s": None,
        "on_fallback": False,
        "has_fallback": False,
    }
    args.update(overrides)
    return decide_retry(cls, **args).action  # type: ignore[arg-type]


def test_invalid_input_and_final_errors_are_never_retried() -> None:
    assert decide(C.INVALID_INPUT, has_fallback=True) is A.FAIL
    assert decide(C.FINAL, has_fallback=True) is A.FAIL


def test_transient_errors_retry_until_the_budget_is_spent() -> None:
    assert decide(C.TRANSIENT, attempt=0) is A.RETRY
    assert decide(C.TRANSIENT, attempt=1) is A.RETRY
    assert decide(C.TRANSIENT, attempt=2) is A.FAIL
    assert decide(C.TRANSIENT, attempt=0, max_retries=0) is A.FAIL


def test_spent_retries_move_to_the_fallback_once() -> None:
    assert decide(C.TRANSIENT, attempt=2, has_fallback=True) is A.FALLBACK
    assert decide(C.TRANSIENT, attempt=2, has_fallback=True, on_fallback=True) is A.FAIL


def test_no_run_starts_after_the_deadline() -> None:
    assert decide(C.TRANSIENT, deadline_s=10.0) is A.FAIL
    assert decide(C.TRANSIENT, deadline_s=10.5) is A.RETRY
    assert decide(C.FATAL, deadline_s=9.0, has_fallback=True) is A.FAIL


def test_no_batch_runs_more_than_its_retries_plus_one_fallback_move() -> None:
    assert decide(C.FATAL, attempt=2, has_fallback=True) is A.FALLBACK
    assert decide(C.FATAL, attempt=3, has_fallback=True) is A.FAIL
    assert decide(C.TRANSIENT, attempt=3, has_fallback=True, max_retries=2) is A.FAIL


def test_a_dead_engine_goes_to_the_fallback_or_fails() -> None:
    assert decide(C.FATAL, has_fallback=True) is A.FALLBACK
    assert decide(C.FATAL) is A.FAIL
    assert decide(C.FATAL, has_fallback=True, on_fallback=True) is A.FAIL


def test_decisions_say_why() -> None:
    decision = decide_retry(
        C.TRANSIENT, attempt=2, max_retries=2, now_s=0, deadline_s=None, on_fallback=False, has_fallback=False
    )
    assert "2" in decision.reason
    assert decision.error_class is C.TRANSIENT
