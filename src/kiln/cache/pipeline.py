"""build_engine: one call from a model file to a cached, accuracy-checked engine.

The entry point ``kiln build`` calls, and the model repository and release gates after it. It
loads and validates the model for the chosen backend, checks the profiles against the model's
inputs, then lets :func:`kiln.cache.builder.obtain_engine` decide between a cache hit, a
weight-only update (refit, or a rebuild reusing the stored calibration) and a full build, with
:class:`kiln.cache.verify.AccuracyVerifier` as the check every new engine must pass. Samples are
read when first needed (:mod:`kiln.cache.build_samples`): a hit reads none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kiln.cache.build_samples import BuildSamples, SampleSource
from kiln.cache.builder import BuildReport, obtain_engine
from kiln.cache.store import EngineStore
from kiln.cache.verify import AccuracyVerifier
from kiln.compile.backends.base import (
    Backend,
    BuildOutput,
    EngineArtifact,
    Progress,
    SupportsModelLimits,
    Target,
)
from kiln.compile.registry import create_backend
from kiln.compile.spec import BuildSpec
from kiln.errors import ConfigError, describe
from kiln.model.load import load_model
from kiln.model.source import ModelSource
from kiln.model.validate import ModelLimits
from kiln.types import TensorSpec

DEFAULT_MAX_CHECK_SAMPLES = 10_000


@dataclass(frozen=True)
class BuildRequest:
    """Everything :func:`build_engine` needs.

    Fields:
        model: the ``.onnx`` file.
        spec: what to build (precision, calibration, profiles, backend, task and accuracy bound).
        calibration: INT8 calibration samples (required for ``int8``).
        validation: samples the new engine is checked on against the fp32 reference. Without
            them the calibration samples are used (reported as ``samples_from: calibration``; an
            optimistic figure for int8, whose ranges were fitted on them); without either, the
            accuracy is not measured, and ``spec.max_accuracy_drop`` is refused.
        cache: the engine cache folder, or an ``EngineStore``; ``None``: ``$KILN_CACHE_DIR``, else
            ``~/.cache/kiln/engines``.
        progress: called as ``(stage, done, total)`` while calibrating, building and checking.
        max_check_samples: at most this many validation samples are run (drawn uniformly, seed 0).
        update_check_samples: how many of them screen a weight-only update before the rest is run
            (only when the screen is not clearly passed); ``None``: a quarter, at least 32 (see
            :func:`kiln.cache.verify.screen_count`).
        lock_timeout_s: how long to wait for another builder of the same engine (``None``: as long
            as it takes); ``CacheBusy`` after that.
    """

    model: Path
    spec: BuildSpec = field(default_factory=BuildSpec)
    calibration: SampleSource | None = None
    validation: SampleSource | None = None
    cache: Path | EngineStore | None = None
    progress: Progress | None = None
    max_check_samples: int = DEFAULT_MAX_CHECK_SAMPLES
    lock_timeout_s: float | None = None
    update_check_samples: int | None = None

    def __post_init__(self) -> None:
        if self.max_check_samples < 1:
            raise ConfigError(describe("max_check_samples must be >= 1", seen=self.max_check_samples))
        if self.update_check_samples is not None and self.update_check_samples < 1:
            raise ConfigError(describe("update_check_samples must be >= 1", seen=self.update_check_samples))


def build_engine(request: BuildRequest) -> BuildReport:
    """Obtain the engine ``request`` describes: from the cache, by a weight-only update, or built.

    Raises, before the cache is touched: ``ConfigError`` (unavailable backend, profiles that do
    not fit the model, int8 without calibration, a sample path that does not exist or holds no
    ``.npz`` files, an accuracy bound without samples to check it on), ``ModelError`` (the model
    file: not ONNX, truncated, checker failures, unsupported ops, external data, absurd dims, IR
    version too new). While building, with nothing stored: ``ConfigError`` (samples whose content
    does not fit the model), ``AccuracyError``, ``BuildError``; ``CacheBusy`` when another builder
    holds the engine too long. The report says which path was taken and the accuracy measured.
    """
    spec = request.spec
    backend = _backend(spec.backend)
    source = load_model(request.model, limits=_limits(backend), op_support=backend.op_support())
    check_profiles(spec, source.inputs)
    samples = BuildSamples(
        spec,
        source.inputs,
        calibration=request.calibration,
        validation=request.validation,
        max_check_samples=request.max_check_samples,
    )
    check = samples.check_samples()
    if check is None and spec.max_accuracy_drop is not None:
        raise ConfigError(
            describe(
                "an accuracy bound needs samples to measure accuracy on",
                seen=f"max_accuracy_drop={spec.max_accuracy_drop}, no validation or calibration data",
                fix="pass --validation DIR (or --calibration DIR), or drop --max-accuracy-drop",
            )
        )
    verify = (
        None
        if check is None
        else AccuracyVerifier(
            backend,
            source,
            spec,
            check,
            progress=request.progress,
            update_check_samples=request.update_check_samples,
        )
    )
    store = request.cache if isinstance(request.cache, EngineStore) else EngineStore(request.cache)
    return obtain_engine(
        source,
        spec,
        CalibrationOnDemand(backend, samples, None if verify is None else verify.prefetch),
        store,
        verify=verify,
        progress=request.progress,
        lock_timeout_s=request.lock_timeout_s,
    )


class CalibrationOnDemand:
    """The backend, handed the calibration samples only when it calibrates (a full int8 build or a
    recalibration); a hit, a refit or a build reusing a stored calibration table never reads them.

    ``on_build`` is told when an engine is about to be made (``update=True`` for a weight-only
    update, a refit included): the verifier starts the fp32 reference then, so that it runs
    during the build.
    """

    def __init__(
        self, backend: Backend, samples: BuildSamples, on_build: Callable[..., None] | None = None
    ) -> None:
        self.name = backend.name
        self._backend = backend
        self._samples = samples
        self._on_build = on_build

    def target(self) -> Target:
        return self._backend.target()

    def build(
        self,
        source: ModelSource,
        spec: BuildSpec,
        out_dir: Path,
        *,
        calibration: object | None = None,
        calibration_cache: Path | None = None,
        progress: Progress | None = None,
    ) -> BuildOutput:
        if self._on_build is not None:
            self._on_build(update=calibration_cache is not None)
        if calibration is None and calibration_cache is None and spec.precision == "int8":
            calibration = self._samples.drawn_for_calibration()
        return self._backend.build(
            source,
            spec,
            out_dir,
            calibration=calibration,
            calibration_cache=calibration_cache,
            progress=progress,
        )

    def refit(self, artifact: EngineArtifact, source: ModelSource, out_dir: Path) -> BuildOutput:
        if self._on_build is not None:  # the reference starts while the engine is refitted
            self._on_build(update=True)
        return self._backend.refit(artifact, source, out_dir)


def _backend(name: str) -> Backend:
    try:
        backend = create_backend(name)
    except ImportError as exc:
        raise ConfigError(
            describe(
                f"backend {name!r} is not part of this kiln installation",
                seen=str(exc),
                fix="use --backend onnxruntime",
            )
        ) from None
    reason = backend.available()
    if reason is not None:
        raise ConfigError(
            describe(f"backend {name!r} cannot run here", seen=reason, fix="use --backend onnxruntime")
        )
    return backend


def _limits(backend: Backend) -> ModelLimits:
    return backend.model_limits() if isinstance(backend, SupportsModelLimits) else ModelLimits()


def check_profiles(spec: BuildSpec, inputs: Sequence[TensorSpec]) -> None:
    """``ConfigError`` naming every profile that does not fit the model's inputs: an unknown input,
    another rank, a range over a dimension the model fixes, or a batch above ``max_batch_size``."""
    by_name = {t.name: t for t in inputs}
    problems: list[str] = []
    for profile in spec.profiles:
        tensor = by_name.get(profile.input)
        if tensor is None:
            problems.append(f"profile for unknown input {profile.input!r} (the inputs are {sorted(by_name)})")
            continue
        shape = list(tensor.shape)
        if len(profile.min) != tensor.rank:
            problems.append(f"profile for {tensor.name!r} has rank {len(profile.min)}, the input {shape}")
            continue
        for axis, fixed in enumerate(tensor.shape):
            span = {profile.min[axis], profile.opt[axis], profile.max[axis]}
            if fixed != -1 and span != {fixed}:
                problems.append(
                    f"profile for {tensor.name!r} allows {profile.min[axis]}..{profile.max[axis]} on axis "
                    f"{axis}, which the model fixes at {fixed} (input {shape})"
                )
        if tensor.shape and tensor.shape[0] == -1 and profile.max[0] > spec.max_batch_size:
            problems.append(
                f"profile for {tensor.name!r} allows batch {profile.max[0]}, "
                f"above max_batch_size {spec.max_batch_size}"
            )
    if problems:
        raise ConfigError(
            describe(
                "shape profiles do not fit the model: " + "; ".join(problems),
                fix="give NAME:MIN,OPT,MAX per input with the model's rank and fixed dims, e.g. "
                + ", ".join(_example_profile(t) for t in inputs),
            )
        )


def _example_profile(tensor: TensorSpec) -> str:
    def shape(batch: int) -> str:
        dims = [batch if i == 0 and d == -1 else (d if d != -1 else 8) for i, d in enumerate(tensor.shape)]
        return "x".join(str(d) for d in dims)

    return f"{tensor.name}:{shape(1)},{shape(8)},{shape(32)}"
