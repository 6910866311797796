"""What to do after an engine run failed: a pure decision from the error's class and the budget.

Error classes:

- ``invalid_input`` (``InvalidInput``): the request is wrong; never retried.
- ``transient`` (``EngineFailed``, and any exception kiln did not raise on purpose): the worker has
  already replaced the failed instance with a new one built from the resident engine; the batch is
  run again while retries and the deadline allow, then moved to the fallback engine if there is one.
- ``fatal`` (``EngineDead``): the engine cannot serve any more; the batch goes to the fallback.
- ``final`` (any other ``KilnError``: ``NotReady``, ``DeadlineExceeded``...): passed on as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kiln.errors import EngineDead, EngineFailed, InvalidInput, KilnError


class ErrorClass(StrEnum):
    INVALID_INPUT = "invalid_input"
    TRANSIENT = "transient"
    FATAL = "fatal"
    FINAL = "final"


class RetryAction(StrEnum):
    RETRY = "retry"
    """Run the batch again on the same engine (a fresh instance)."""
    FALLBACK = "fallback"
    """Run the batch on the fallback engine; the primary is marked unhealthy or dead."""
    FAIL = "fail"
    """Give the error to every request of the batch."""


@dataclass(frozen=True, slots=True)
class RetryDecision:
    action: RetryAction
    error_class: ErrorClass
    reason: str


def classify(error: BaseException) -> ErrorClass:
    if isinstance(error, InvalidInput):
        return ErrorClass.INVALID_INPUT
    if isinstance(error, EngineDead):
        return ErrorClass.FATAL
    if isinstance(error, EngineFailed):
        return ErrorClass.TRANSIENT
    if isinstance(error, KilnError):
        return ErrorClass.FINAL
    return ErrorClass.TRANSIENT


def decide_retry(
    error_class: ErrorClass,
    *,
    attempt: int,
    max_retries: int,
    now_s: float,
    deadline_s: float | None,
    on_fallback: bool,
    has_fallback: bool,
) -> RetryDecision:
    """Decide the next step after failed run number ``attempt`` (0 = the first run).

    ``deadline_s`` is the latest deadline among the batch's requests (``None``: no deadline); no
    new run starts after it. ``on_fallback`` says the failed run was already on the fallback.
    A batch gets at most ``max_retries + 2`` runs in all (its retries plus one fallback move).
    """
    if error_class in (ErrorClass.INVALID_INPUT, ErrorClass.FINAL):
        return RetryDecision(RetryAction.FAIL, error_class, f"{error_class} errors are not retried")
    if deadline_s is not None and now_s >= deadline_s:
        return RetryDecision(RetryAction.FAIL, error_class, "the deadline passed; no new run")
    if attempt > max_retries:
        return RetryDecision(RetryAction.FAIL, error_class, f"{attempt + 1} runs failed; the budget is spent")
    can_fall_back = has_fallback and not on_fallback
    if error_class is ErrorClass.FATAL:
        if can_fall_back:
            return RetryDecision(RetryAction.FALLBACK, error_class, "primary engine is dead")
        return RetryDecision(RetryAction.FAIL, error_class, "engine is dead and no fallback is left")
    if attempt < max_retries:
        return RetryDecision(
            RetryAction.RETRY, error_class, f"retry {attempt + 1} of {max_retries} on a new instance"
        )
    if can_fall_back:
        return RetryDecision(
            RetryAction.FALLBACK, error_class, f"{max_retries} retries spent; primary is unhealthy"
        )
    return RetryDecision(RetryAction.FAIL, error_class, f"retry budget of {max_retries} spent")
