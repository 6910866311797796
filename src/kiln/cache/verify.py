"""The accuracy check a new engine must pass before the cache stores it.

:class:`AccuracyVerifier` is the ``verify`` that :func:`kiln.cache.builder.obtain_engine` calls on a
staged engine: it loads the engine with its backend, runs the check samples through it and through
the fp32 reference of the source model (ONNX Runtime; optimizations off for an fp32 engine, on for
int8 and fp16 ones: see :mod:`kiln.compile.reference`), compares the first outputs with
:func:`kiln.compile.accuracy.measure_accuracy` and enforces ``max_accuracy_drop``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

import numpy as np

from kiln.compile.accuracy import (
    AccuracyReport,
    RunFn,
    check_accuracy,
    drop_upper_bound,
    measure_accuracy,
    run_batches,
)
from kiln.compile.backends.base import (
    Backend,
    BuildOutput,
    EngineArtifact,
    LoadOptions,
    Manifest,
    Progress,
)
from kiln.compile.data import SampleSet
from kiln.compile.reference import reference_outputs
from kiln.compile.spec import BuildSpec
from kiln.errors import ConfigError
from kiln.model.source import ModelSource
from kiln.types import Array, ShapeProfile, Tensors

SamplesFrom: TypeAlias = Literal["validation", "calibration"]
"""Where the check samples came from: the validation set, or (without one) the calibration set."""

MAX_CHECK_BATCH = 32
MIN_UPDATE_CHECK_SAMPLES = 32
"""The fewest check samples a weight-only update is screened on (see :func:`screen_count`)."""
BESIDE_REFERENCE = LoadOptions(num_instances=2)
"""How an engine is loaded for its check while the fp32 reference runs beside it: as one of two
instances sharing the CPUs, so that the pair does not oversubscribe them (the reference keeps
every CPU: it is the larger part and runs on alone once the engine is done)."""


@dataclass(frozen=True)
class CheckSamples:
    """The samples an engine is checked on, loaded on first use (a cache hit never needs them)."""

    load: Callable[[], SampleSet]
    samples_from: SamplesFrom


class AccuracyVerifier:
    """``Verifier`` for :func:`obtain_engine`: the staged engine against the fp32 reference.

    A new engine is checked on every check sample. A weight-only update
    (:meth:`check_update`) is screened first on a prefix of them (``update_check_samples``,
    default :func:`screen_count`): without a bound that figure is the report; under a bound it
    is accepted when the bootstrap upper bound of its drop on the prefix is within the bound,
    otherwise the rest of the samples is run and the figure on all of them decides. The
    reference outputs are computed once per verifier (one source model), prefix first, and can
    be started in the background while the engine builds (:meth:`prefetch`). A check loads the
    new engine and runs it on the samples before it waits for that background reference, so
    that the two run side by side.
    Returns the accuracy report as JSON data (``AccuracyReport.to_json()`` plus ``metric``,
    ``samples_from`` and the bound), or raises ``AccuracyError`` naming the metric, the value
    and the bound.
    """

    def __init__(
        self,
        backend: Backend,
        source: ModelSource,
        spec: BuildSpec,
        samples: CheckSamples,
        *,
        progress: Progress | None = None,
        update_check_samples: int | None = None,
    ) -> None:
        self._backend = backend
        self._source = source
        self._spec = spec
        self._samples = samples
        self._progress = progress
        self._update_check_samples = update_check_samples
        self._loaded: SampleSet | None = None
        self._reference: Array | None = None
        self._candidate: Array | None = None
        self._pending: Future[None] | None = None
        self._loading = threading.Lock()  # the samples are read once, by whichever thread is first

    def __call__(self, artifact_dir: Path, output: BuildOutput) -> dict[str, object]:
        with self._engine(artifact_dir, output) as run:
            samples = self._check_samples()
            report = self._measure(run, samples, len(samples))
        check_accuracy(report, self._spec.max_accuracy_drop)
        return self._json(report)

    def check_update(
        self, artifact_dir: Path, output: BuildOutput, baseline: Mapping[str, object] | None
    ) -> dict[str, object]:
        """Screen a weight-only update on a prefix of the samples, all of them when in doubt.
        ``baseline`` (the previous engine's report) is not used for the decision."""
        del baseline
        with self._engine(artifact_dir, output) as run:
            samples = self._check_samples()
            count = self._screen_count(len(samples))
            try:
                report = self._measure(run, samples, count)
            except ConfigError:  # the prefix cannot be judged alone (e.g. AUC: one class only)
                count = len(samples)
            if count < len(samples) and not self._screen_passes(samples, count):
                count = len(samples)
            if count == len(samples):
                report = self._measure(run, samples, count)
        check_accuracy(report, self._spec.max_accuracy_drop)
        return self._json(report)

    def measure(self, artifact_dir: Path, output: BuildOutput) -> AccuracyReport:
        """The staged engine's accuracy on every check sample, without judging it."""
        with self._engine(artifact_dir, output) as run:
            samples = self._check_samples()
            return self._measure(run, samples, len(samples))

    def prefetch(self, *, update: bool) -> None:
        """Start reading the check samples and the fp32 reference in a background thread (on the
        screening prefix for an update), so that both run while the engine builds. Errors surface
        when it is used."""
        if self._pending is not None or self._source.model is None:
            return

        def work() -> None:
            samples = self._check_samples()
            count = self._screen_count(len(samples)) if update else len(samples)
            self._extend_reference(samples, count)

        self._pending = _in_background(work)

    def _start_reference(self, samples: SampleSet, count: int) -> None:
        """Extend the reference to ``count`` samples in the background, unless it covers them,
        is being computed already, or has no ONNX model (then it is computed when awaited)."""
        have = 0 if self._reference is None else len(self._reference)
        if self._pending is not None or self._source.model is None or have >= count:
            return
        self._pending = _in_background(lambda: self._extend_reference(samples, count))

    def _reference_running(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def _json(self, report: AccuracyReport) -> dict[str, object]:
        return {
            **report.to_json(),
            "metric": report.metric,
            "samples_from": self._samples.samples_from,
            "max_accuracy_drop": self._spec.max_accuracy_drop,
        }

    def _screen_count(self, total: int) -> int:
        return screen_count(total, self._batch_size(), self._update_check_samples)

    def _screen_passes(self, samples: SampleSet, count: int) -> bool:
        bound = self._spec.max_accuracy_drop
        if bound is None:
            return True
        assert self._candidate is not None
        assert self._reference is not None
        labels = None if samples.labels is None else samples.labels[:count]
        upper = drop_upper_bound(
            self._reference[:count], self._candidate[:count], task=self._spec.task, labels=labels
        )
        return upper <= bound

    def _measure(self, run: RunFn, samples: SampleSet, count: int) -> AccuracyReport:
        self._start_reference(samples, count)
        candidate = self._candidate_output(run, samples, count)
        reference = self._reference_output(samples, count)  # the background one may still run
        labels = None if samples.labels is None else samples.labels[:count]
        return measure_accuracy(reference, candidate, task=self._spec.task, labels=labels)

    def _candidate_output(self, run: RunFn, samples: SampleSet, count: int) -> Array:
        candidate = self._candidate
        have = 0 if candidate is None else len(candidate)
        if have < count:
            total, done = -(-(count - have) // self._batch_size()), 0

            def counted(batch: Tensors) -> dict[str, Array]:
                nonlocal done
                values = run(batch)
                done += 1
                if self._progress is not None:
                    self._progress("checking accuracy", done, total)
                return values

            part = run_batches(counted, samples.take(range(have, count)), self._batch_size())
            new = part[self._source.outputs[0].name]
            candidate = new if candidate is None else np.concatenate([candidate, new])
            self._candidate = candidate
        assert candidate is not None
        return candidate[:count]

    def _check_samples(self) -> SampleSet:
        with self._loading:
            if self._loaded is None:
                self._loaded = self._samples.load()
            return self._loaded

    def _reference_output(self, samples: SampleSet, count: int) -> Array:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
        self._extend_reference(samples, count)
        assert self._reference is not None
        return self._reference[:count]

    def _extend_reference(self, samples: SampleSet, count: int) -> None:
        have = 0 if self._reference is None else len(self._reference)
        if have >= count:
            return
        model = self._source.model
        if model is None:
            raise ValueError("the fp32 reference needs an ONNX source model")
        outputs = reference_outputs(
            model,
            samples.take(range(have, count)),
            batch_size=self._batch_size(),
            progress=self._progress,
            optimized=self._spec.precision != "fp32",
            serialized=self._source.serialized,
        )
        new = outputs[self._source.outputs[0].name]
        self._reference = new if self._reference is None else np.concatenate([self._reference, new])

    @contextmanager
    def _engine(self, artifact_dir: Path, output: BuildOutput) -> Iterator[RunFn]:
        """The staged engine as a batch runner, closed afterwards; candidate outputs start empty.
        While the reference runs in the background the engine is loaded as one of two instances
        sharing the CPUs (:data:`BESIDE_REFERENCE`)."""
        options = BESIDE_REFERENCE if self._reference_running() else None
        engine = self._backend.load(EngineArtifact(artifact_dir, self._staged_manifest(output)), options)
        instance = engine.create_instance()
        self._candidate = None
        try:
            yield instance.run
        finally:
            self._candidate = None
            instance.close()
            engine.close()

    def _batch_size(self) -> int:
        return check_batch_size(self._spec.max_batch_size, self._spec.profiles)

    def _staged_manifest(self, output: BuildOutput) -> Manifest:
        """What the backend's ``load`` reads, for an engine the cache has not committed yet."""
        return Manifest(
            key="staged",
            backend=self._backend.name,
            engine_file=output.engine_file,
            fingerprint=self._source.fingerprint.to_json(),
            spec=self._spec.to_json(),
            target=self._backend.target().to_json(),
            inputs=self._source.inputs,
            outputs=self._source.outputs,
            files={},
            build_path=output.build_path,
            build_seconds=0.0,
            created_at=0.0,
            calibration_file=output.calibration_file,
            extra=dict(output.extra),
        )


def _in_background(work: Callable[[], None]) -> Future[None]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-reference")
    try:
        return executor.submit(work)
    finally:
        executor.shutdown(wait=False)


def screen_count(total: int, batch_size: int, asked: int | None = None) -> int:
    """How many of ``total`` check samples screen a weight-only update: ``asked``, else a quarter of
    them and at least :data:`MIN_UPDATE_CHECK_SAMPLES`; rounded up to whole batches, at most all."""
    wanted = asked if asked is not None else max(MIN_UPDATE_CHECK_SAMPLES, -(-total // 4))
    return min(total, -(-wanted // batch_size) * batch_size)


def check_batch_size(max_batch_size: int, profiles: Sequence[ShapeProfile]) -> int:
    """Batch size for running check samples: at most 32, ``max_batch_size`` and every profile's
    largest batch (axis 0)."""
    limits = [MAX_CHECK_BATCH, max_batch_size, *(p.max[0] for p in profiles if p.max)]
    return max(1, min(limits))
