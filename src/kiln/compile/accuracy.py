"""Accuracy of a built engine against the fp32 reference. (Contract; implementation pending.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kiln.compile.data import SampleSet
from kiln.compile.spec import Task
from kiln.types import Array, Tensors

RunFn = Callable[[Tensors], dict[str, Array]]


@dataclass(frozen=True)
class AccuracyReport:
    """Candidate vs reference on the first output.

    ``drop`` is the task's loss figure compared with ``max_accuracy_drop``: 1 - top-1 agreement
    (classifier), reference AUC - candidate AUC (ctr, needs labels), 1 - Spearman (ranker),
    relative L2 error (none).
    """

    task: Task
    num_samples: int
    max_abs_error: float
    rel_l2_error: float
    drop: float
    top1_agreement: float | None = None
    auc_reference: float | None = None
    auc_candidate: float | None = None
    spearman: float | None = None

    def to_json(self) -> dict[str, object]:
        raise NotImplementedError


def run_batches(run: RunFn, samples: SampleSet, batch_size: int) -> dict[str, Array]:
    """Run ``samples`` through ``run`` in batches; outputs concatenated on axis 0."""
    raise NotImplementedError


def measure_accuracy(
    reference: Array, candidate: Array, *, task: Task, labels: Array | None = None
) -> AccuracyReport:
    raise NotImplementedError


def check_accuracy(report: AccuracyReport, max_drop: float | None) -> None:
    """``AccuracyError`` naming the metric, the value and the bound when the drop is too large."""
    raise NotImplementedError
