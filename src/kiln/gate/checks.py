"""The gate's decisions: measurements and thresholds in, a :class:`CheckResult` out. Pure, no I/O.

Every check names what it measured, the threshold and its direction, and passes or fails; a
measurement that could not be taken (``None``) fails with the reason in ``detail``.
:func:`accuracy_check` is the one other release paths reuse (the online-learning loop gates each
retrained model with it): it measures a candidate's outputs against reference outputs with
:func:`kiln.compile.accuracy.measure_accuracy` and decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from kiln.bench.efficiency import Capacity, ratio
from kiln.bench.results import StepResult
from kiln.compile.accuracy import measure_accuracy
from kiln.compile.spec import Task
from kiln.types import Array, TensorSpec

Comparison: TypeAlias = Literal["<=", ">="]
Status: TypeAlias = Literal["pass", "fail", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """One gate check: ``measured`` against ``threshold`` in ``unit`` (``comparison`` says which way)."""

    name: str
    measured: float | None
    threshold: float | None
    comparison: Comparison
    unit: str
    status: Status
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "measured": self.measured, "threshold": self.threshold,
                "comparison": self.comparison, "unit": self.unit, "status": self.status,
                "detail": self.detail}  # fmt: skip


def skipped(name: str, comparison: Comparison, unit: str, detail: str) -> CheckResult:
    return CheckResult(name, None, None, comparison, unit, "skipped", detail)


def compare(  # noqa: PLR0917 (reads as the sentence it decides: name, measured, threshold, way, unit)
    name: str, measured: float | None, threshold: float, comparison: Comparison, unit: str, detail: str = ""
) -> CheckResult:
    """Pass when ``measured comparison threshold`` holds; fail when it does not or ``measured`` is
    ``None`` or not finite (``detail`` should say why)."""
    ok = measured is not None and math.isfinite(measured)
    if ok and measured is not None:
        ok = measured <= threshold if comparison == "<=" else measured >= threshold
    if not ok and not detail:
        shown = "not measured" if measured is None else f"{measured:g} {unit}"
        detail = f"{shown}, needs {comparison} {threshold:g} {unit}"
    return CheckResult(name, measured, threshold, comparison, unit, "pass" if ok else "fail", detail)


def accuracy_drop_check(name: str, accuracy: Mapping[str, object] | None, max_drop: float) -> CheckResult:
    """``accuracy['drop']`` (an ``AccuracyReport`` as JSON) ≤ ``max_drop``."""
    if accuracy is None or not isinstance(accuracy.get("drop"), int | float):
        return compare(
            name, None, max_drop, "<=", "drop", "accuracy was not measured (no validation samples?)"
        )
    drop = float(accuracy["drop"])  # type: ignore[arg-type]
    metric = accuracy.get("metric") or accuracy.get("task")
    return compare(name, drop, max_drop, "<=", "drop", f"{metric}" if drop <= max_drop else "")


def accuracy_check(
    name: str,
    reference: Array,
    candidate: Array,
    *,
    task: Task,
    max_drop: float,
    labels: Array | None = None,
) -> CheckResult:
    """Measure ``candidate`` against ``reference`` outputs (samples on axis 0) for ``task`` and
    check the drop ≤ ``max_drop``. Raises ``ConfigError`` when the task does not fit the outputs."""
    report = measure_accuracy(reference, candidate, task=task, labels=labels)
    return accuracy_drop_check(name, report.to_json(), max_drop)


def p99_check(name: str, step: StepResult | None, max_p99_ms: float) -> CheckResult:
    """The step's p99 ≤ ``max_p99_ms``; fails naming the error kinds when requests failed."""
    if step is None:
        return compare(name, None, max_p99_ms, "<=", "ms", "the load step did not run")
    if step.ok == 0:
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(step.errors.items())) or "no request completed"
        return compare(name, None, max_p99_ms, "<=", "ms", f"every request failed at {step.label}: {kinds}")
    p99 = step.summary.p99_ms
    if step.failed:
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(step.errors.items()))
        return CheckResult(name, p99, max_p99_ms, "<=", "ms", "fail",
                           f"{step.failed} of {step.ok + step.failed} requests failed: {kinds}")  # fmt: skip
    return compare(name, p99, max_p99_ms, "<=", "ms")


def speedup_check(name: str, kiln: Capacity, baseline: Capacity, min_speedup: float) -> CheckResult:
    """kiln's throughput ÷ the baseline's at the same p99 bound ≥ ``min_speedup``."""
    value = ratio(kiln, baseline).value
    if value is None:
        missing = [c for c in (kiln, baseline) if c.step is None]
        why = "; ".join(
            f"{c.variant}: no step with p99 <= {c.bound_ms:g} ms"
            + (
                f" (best p99 {c.best_p99_ms:.2f} ms)"
                if c.best_p99_ms is not None
                else " (no successful step)"
            )
            for c in missing
        )
        return compare(name, None, min_speedup, ">=", "x", why)
    detail = (
        f"{kiln.throughput_per_s:.0f}/s ({kiln.step}) vs {baseline.throughput_per_s:.0f}/s "
        f"({baseline.step}) at p99 <= {kiln.bound_ms:g} ms"
    )
    return compare(name, value, min_speedup, ">=", "x", detail)


def build_time_check(name: str, seconds: float, max_s: float, path: str = "") -> CheckResult:
    return compare(name, seconds, max_s, "<=", "s", f"build path: {path}" if path else "")


def signature_differences(
    candidate: Sequence[TensorSpec], served: Sequence[TensorSpec], what: str
) -> list[str]:
    """Each way ``candidate``'s tensors differ from ``served``'s, in words (empty: the same)."""
    mine = {t.name: t for t in candidate}
    theirs = {t.name: t for t in served}
    problems = [f"{what} {n!r} is new (not in the served model)" for n in sorted(set(mine) - set(theirs))]
    problems += [
        f"{what} {n!r} is missing (the served model has it)" for n in sorted(set(theirs) - set(mine))
    ]
    for n in sorted(set(mine) & set(theirs)):
        a, b = mine[n], theirs[n]
        if a.datatype != b.datatype:
            problems.append(f"{what} {n!r} is {a.datatype}, served {b.datatype}")
        if a.shape != b.shape:
            problems.append(f"{what} {n!r} has shape {list(a.shape)}, served {list(b.shape)}")
    return problems


def signature_check(
    name: str,
    candidate: tuple[Sequence[TensorSpec], Sequence[TensorSpec]],
    served: tuple[Sequence[TensorSpec], Sequence[TensorSpec]],
) -> CheckResult:
    """The candidate's (inputs, outputs) match the served model's: names, datatypes and shapes."""
    problems = signature_differences(candidate[0], served[0], "input")
    problems += signature_differences(candidate[1], served[1], "output")
    status: Status = "fail" if problems else "pass"
    return CheckResult(name, float(len(problems)), 0.0, "<=", "differences", status, "; ".join(problems))
