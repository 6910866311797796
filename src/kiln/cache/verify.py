"""The accuracy check a new engine must pass before the cache stores it.

:class:`AccuracyVerifier` is the ``verify`` that :func:`kiln.cache.builder.obtain_engine` calls on a
staged engine: it loads the engine with its backend, runs the check samples through it and through
the fp32 reference of the source model (ONNX Runtime, optimizations off), compares the first
outputs with :func:`kiln.compile.accuracy.measure_accuracy` and enforces ``max_accuracy_drop``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from kiln.compile.accuracy import AccuracyReport, check_accuracy, measure_accuracy, run_batches
from kiln.compile.backends.base import Backend, BuildOutput, EngineArtifact, Manifest, Progress
from kiln.compile.data import SampleSet
from kiln.compile.reference import reference_outputs
from kiln.compile.spec import BuildSpec
from kiln.model.source import ModelSource
from kiln.types import Array, ShapeProfile, Tensors

SamplesFrom: TypeAlias = Literal["validation", "calibration"]
"""Where the check samples came from: the validation set, or (without one) the calibration set."""

MAX_CHECK_BATCH = 32


@dataclass(frozen=True)
class CheckSamples:
    """The samples an engine is checked on, loaded on first use (a cache hit never needs them)."""

    load: Callable[[], SampleSet]
    samples_from: SamplesFrom


class AccuracyVerifier:
    """``Verifier`` for :func:`obtain_engine`: the staged engine against the fp32 reference.

    The reference outputs are computed once per verifier (one source model), so a rebuild after a
    failed calibration reuse does not run the reference again. Returns the accuracy report as
    JSON data (``AccuracyReport.to_json()`` plus ``metric``, ``samples_from`` and the bound), or
    raises ``AccuracyError`` naming the metric, the value and the bound.
    """

    def __init__(
        self,
        backend: Backend,
        source: ModelSource,
        spec: BuildSpec,
        samples: CheckSamples,
        *,
        progress: Progress | None = None,
    ) -> None:
        self._backend = backend
        self._source = source
        self._spec = spec
        self._samples = samples
        self._progress = progress
        self._loaded: SampleSet | None = None
        self._reference: Array | None = None

    def __call__(self, artifact_dir: Path, output: BuildOutput) -> dict[str, object]:
        report = self.measure(artifact_dir, output)
        check_accuracy(report, self._spec.max_accuracy_drop)
        return {
            **report.to_json(),
            "metric": report.metric,
            "samples_from": self._samples.samples_from,
            "max_accuracy_drop": self._spec.max_accuracy_drop,
        }

    def measure(self, artifact_dir: Path, output: BuildOutput) -> AccuracyReport:
        """The staged engine's accuracy against the reference, without judging it."""
        samples = self._check_samples()
        reference = self._reference_output(samples)
        candidate = self._engine_output(artifact_dir, output, samples)
        return measure_accuracy(reference, candidate, task=self._spec.task, labels=samples.labels)

    def _check_samples(self) -> SampleSet:
        if self._loaded is None:
            self._loaded = self._samples.load()
        return self._loaded

    def _reference_output(self, samples: SampleSet) -> Array:
        if self._reference is None:
            model = self._source.model
            if model is None:
                raise ValueError("the fp32 reference needs an ONNX source model")
            outputs = reference_outputs(
                model, samples, batch_size=self._batch_size(), progress=self._progress
            )
            self._reference = outputs[self._source.outputs[0].name]
        return self._reference

    def _engine_output(self, artifact_dir: Path, output: BuildOutput, samples: SampleSet) -> Array:
        engine = self._backend.load(EngineArtifact(artifact_dir, self._staged_manifest(output)))
        instance = engine.create_instance()
        total = -(-len(samples) // self._batch_size())
        done = 0

        def run(batch: Tensors) -> dict[str, Array]:
            nonlocal done
            values = instance.run(batch)
            done += 1
            if self._progress is not None:
                self._progress("checking accuracy", done, total)
            return values

        try:
            return run_batches(run, samples, self._batch_size())[self._source.outputs[0].name]
        finally:
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


def check_batch_size(max_batch_size: int, profiles: Sequence[ShapeProfile]) -> int:
    """Batch size for running check samples: at most 32, ``max_batch_size`` and every profile's
    largest batch (axis 0)."""
    limits = [MAX_CHECK_BATCH, max_batch_size, *(p.max[0] for p in profiles if p.max)]
    return max(1, min(limits))
