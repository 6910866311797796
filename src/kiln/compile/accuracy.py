"""Accuracy of a built engine against the fp32 reference.

Every report carries the max absolute and relative L2 error of the first output; the task adds
the figure users care about: top-1 agreement (classifier), AUC against labels (ctr), Spearman rank
correlation (ranker). ``drop`` is the loss compared with ``BuildSpec.max_accuracy_drop``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from kiln.compile.data import SampleSet
from kiln.compile.spec import Task
from kiln.errors import AccuracyError, BuildError, ConfigError, describe
from kiln.types import Array, Tensors

RunFn = Callable[[Tensors], dict[str, Array]]
Floats = npt.NDArray[np.float64]

_METRIC = {
    "none": "relative L2 error",
    "classifier": "top-1 agreement",
    "ctr": "AUC",
    "ranker": "Spearman rank correlation",
}


@dataclass(frozen=True)
class AccuracyReport:
    """Candidate vs reference on the first output.

    ``drop`` is the task's loss figure compared with ``max_accuracy_drop``: 1 - top-1 agreement
    (classifier), reference AUC - candidate AUC (ctr, needs labels), 1 - Spearman (ranker),
    relative L2 error (none). A candidate with NaN/Inf outputs gets infinite errors and drop.
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

    @property
    def metric(self) -> str:
        """The name of the figure ``drop`` is derived from."""
        return _METRIC[self.task]

    def to_json(self) -> dict[str, object]:
        """Plain JSON data; a non-finite float becomes ``null`` (``from_json`` reads it back as inf)."""
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> AccuracyReport:
        def number(key: str) -> float:
            value = data.get(key)
            return math.inf if value is None else float(value)  # type: ignore[arg-type]

        def optional(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)  # type: ignore[arg-type]

        return cls(
            task=data["task"],  # type: ignore[arg-type]
            num_samples=int(data["num_samples"]),  # type: ignore[call-overload]
            max_abs_error=number("max_abs_error"),
            rel_l2_error=number("rel_l2_error"),
            drop=number("drop"),
            top1_agreement=optional("top1_agreement"),
            auc_reference=optional("auc_reference"),
            auc_candidate=optional("auc_candidate"),
            spearman=optional("spearman"),
        )


def _finite_or_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_batches(run: RunFn, samples: SampleSet, batch_size: int) -> dict[str, Array]:
    """Run ``samples`` through ``run`` in batches; outputs concatenated on axis 0."""
    parts: dict[str, list[Array]] = {}
    for batch in samples.batches(batch_size):
        for name, value in run(batch).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def measure_accuracy(
    reference: Array, candidate: Array, *, task: Task, labels: Array | None = None
) -> AccuracyReport:
    """Compare ``candidate`` with ``reference`` (same shape, samples on axis 0).

    ``classifier`` wants ``(N, C)`` logits or probabilities with ``C >= 2``; ``ctr`` one score per
    sample (``(N,)``, ``(N, 1)``, or ``(N, 2)`` whose column 1 is the positive class) and 0/1
    ``labels``; ``ranker`` compares all scores by rank. Raises ``ConfigError`` when the task does
    not fit the outputs or labels, ``BuildError`` when the shapes differ.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise BuildError(
            describe(
                "the engine's output shape differs from the fp32 reference",
                seen=f"{list(cand.shape)} vs {list(ref.shape)}",
                fix="the conversion changed the model's output; rebuild with --precision fp32",
            )
        )
    num = int(ref.shape[0]) if ref.ndim else 1
    finite = bool(np.isfinite(cand).all())
    max_abs = float(np.max(np.abs(cand - ref), initial=0.0)) if finite else math.inf
    rel_l2 = relative_l2(ref, cand) if finite else math.inf
    if task == "none":
        return AccuracyReport(task, num, max_abs, rel_l2, drop=rel_l2)
    if task == "classifier":
        agreement = top1_agreement(ref, cand) if finite else 0.0
        return AccuracyReport(task, num, max_abs, rel_l2, drop=1.0 - agreement, top1_agreement=agreement)
    if task == "ctr":
        truth = _binary_labels(labels, num)
        auc_ref = auc(_scores(ref), truth)
        auc_cand = auc(_scores(cand), truth) if finite else 0.0
        return AccuracyReport(
            task, num, max_abs, rel_l2, drop=auc_ref - auc_cand, auc_reference=auc_ref, auc_candidate=auc_cand
        )
    rho = spearman(ref.ravel(), cand.ravel()) if finite else 0.0
    return AccuracyReport(task, num, max_abs, rel_l2, drop=1.0 - rho, spearman=rho)


def relative_l2(reference: Array, candidate: Array) -> float:
    """``||candidate - reference|| / ||reference||``; 0 when both are zero, inf when only the
    reference is."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    diff = float(np.linalg.norm(np.asarray(candidate, dtype=np.float64).ravel() - ref))
    norm = float(np.linalg.norm(ref))
    if norm == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / norm


def top1_agreement(reference: Array, candidate: Array) -> float:
    """Fraction of samples whose arg-max class is the same in both."""
    ref = reference.reshape(reference.shape[0], -1)
    if ref.shape[1] < 2:
        raise ConfigError(
            describe(
                "task 'classifier' needs one score per class (N, C) with C >= 2",
                seen=list(reference.shape),
                fix="use --task ctr or --task ranker for a model with one score per sample",
            )
        )
    cand = candidate.reshape(candidate.shape[0], -1)
    return float(np.mean(np.argmax(ref, axis=1) == np.argmax(cand, axis=1)))


def _scores(outputs: Floats) -> Floats:
    flat = outputs.reshape(outputs.shape[0], -1)
    if flat.shape[1] == 1:
        return flat[:, 0]
    if flat.shape[1] == 2:
        return flat[:, 1]
    raise ConfigError(
        describe(
            "task 'ctr' needs one score per sample",
            seen=list(outputs.shape),
            fix="use --task classifier for class scores or --task ranker",
        )
    )


def _binary_labels(labels: Array | None, num: int) -> npt.NDArray[np.bool_]:
    if labels is None:
        raise ConfigError(
            describe(
                "task 'ctr' measures AUC against labels and the validation samples have none",
                fix="add a _label array (0/1 per sample) to the samples, or use --task ranker",
            )
        )
    flat = np.asarray(labels).ravel()
    if flat.shape[0] != num or not np.isin(flat, (0, 1)).all():
        raise ConfigError(
            describe(
                f"task 'ctr' needs one 0/1 label per sample ({num})",
                seen=f"{flat.shape[0]} labels, values {np.unique(flat)[:5].tolist()}",
                fix="store _label as 0/1 (click / no click)",
            )
        )
    return flat.astype(bool)


def average_ranks(values: Array) -> Floats:
    """1-based ranks, ties sharing the average of the ranks they span."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="mergesort")
    ordered = flat[order]
    starts = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [len(flat)]]) - 1
    ranks = np.empty(len(flat), dtype=np.float64)
    ranks[order] = (first[group] + last[group]) / 2.0 + 1.0
    return ranks


def auc(scores: Array, labels: Array) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney U) formula; tied scores count one half."""
    truth = np.asarray(labels).ravel().astype(bool)
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        raise ConfigError(
            describe(
                "AUC needs both classes in the labels",
                seen=f"{positives} positive, {negatives} negative",
                fix="use validation samples holding clicks and non-clicks",
            )
        )
    rank_sum = float(average_ranks(scores)[truth].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def spearman(a: Array, b: Array) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks). Two constant inputs
    agree fully (1.0); one constant input against a varying one gives 0.0."""
    ra, rb = average_ranks(a), average_ranks(b)
    da, db = ra - ra.mean(), rb - rb.mean()
    norm = math.sqrt(float(da @ da) * float(db @ db))
    if norm == 0.0:
        return 1.0 if float(da @ da) == float(db @ db) == 0.0 else 0.0
    return float(da @ db) / norm


def drop_upper_bound(
    reference: Array,
    candidate: Array,
    *,
    task: Task,
    labels: Array | None = None,
    confidence: float = 0.95,
    rounds: int = 200,
    seed: int = 0,
) -> float:
    """An upper confidence bound of ``measure_accuracy(...).drop``: the ``confidence`` quantile of
    the drop over ``rounds`` bootstrap resamples of the samples (seeded, so repeatable). Used to
    accept a result measured on few samples only when it is clearly within a bound."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    count = int(ref.shape[0])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, count, (rounds, count))
    if task == "classifier" and np.isfinite(cand).all():
        same = np.argmax(ref.reshape(count, -1), axis=1) == np.argmax(cand.reshape(count, -1), axis=1)
        drops = 1.0 - same[draws].mean(axis=1)
    else:
        drops = np.empty(rounds)
        for i, index in enumerate(draws):
            picked = None if labels is None else np.asarray(labels)[index]
            try:
                drops[i] = measure_accuracy(ref[index], cand[index], task=task, labels=picked).drop
            except ConfigError:  # a resample with one class only (AUC): no figure from it
                drops[i] = np.nan
        drops = drops[~np.isnan(drops)]
        if drops.size == 0:
            return math.inf
    return float(np.quantile(drops, confidence))


def check_accuracy(report: AccuracyReport, max_drop: float | None) -> None:
    """``AccuracyError`` naming the metric, the value and the bound when the drop is too large."""
    if max_drop is None or report.drop <= max_drop:
        return
    value = {
        "none": report.rel_l2_error,
        "classifier": report.top1_agreement,
        "ctr": report.auc_candidate,
        "ranker": report.spearman,
    }[report.task]
    detail = f"{report.metric} {value:.6g}" if value is not None else report.metric
    if report.task == "ctr":
        detail += f" (fp32 reference AUC {report.auc_reference:.6g})"
    raise AccuracyError(
        describe(
            f"accuracy against fp32 is below the bound: {detail} on {report.num_samples} samples, "
            f"a drop of {report.drop:.6g} > max_accuracy_drop {max_drop:g}",
            fix="try --precision fp16, --keep-fp32 NODE for the most sensitive layers, --per-channel, "
            "or another --calibration-method (minmax, percentile, entropy); "
            "or raise --max-accuracy-drop if the loss is acceptable",
        )
    )
