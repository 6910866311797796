"""build_engine: one call from a model file to a cached, accuracy-checked engine.

The entry point ``kiln build`` calls, and the model repository and release gates after it. It
loads and validates the model for the chosen backend, reads and checks the calibration and
validation samples against the model's inputs, then lets :func:`kiln.cache.builder.obtain_engine`
decide between a cache hit, a weight-only update (refit, or a rebuild reusing the stored
calibration) and a full build, with :class:`kiln.cache.verify.AccuracyVerifier` as the check every
new engine must pass. Every input problem is raised before the cache is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kiln.cache.builder import BuildReport, obtain_engine
from kiln.cache.store import EngineStore
from kiln.cache.verify import AccuracyVerifier, CheckSamples, SamplesFrom, check_batch_size
from kiln.compile.backends.base import Backend, Progress, SupportsModelLimits
from kiln.compile.data import STRATIFY_KEY, SampleSet, check_samples, load_samples, select_samples
from kiln.compile.registry import create_backend
from kiln.compile.spec import BuildSpec, CalibrationSpec
from kiln.errors import ConfigError, describe
from kiln.model.load import load_model
from kiln.model.source import ModelSource
from kiln.model.validate import ModelLimits
from kiln.types import TensorSpec

SampleSource = Path | SampleSet
"""A folder (or one ``.npz`` file) of samples, or samples already in memory."""

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

    def __post_init__(self) -> None:
        if self.max_check_samples < 1:
            raise ConfigError(describe("max_check_samples must be >= 1", seen=self.max_check_samples))


def build_engine(request: BuildRequest) -> BuildReport:
    """Obtain the engine ``request`` describes: from the cache, by a weight-only update, or built.

    Raises, before the cache is touched: ``ConfigError`` (unavailable backend, calibration or
    validation samples that do not fit the model, profiles that do not fit it, int8 without
    calibration, an accuracy bound without samples to check it on), ``ModelError`` (the model
    file: not ONNX, truncated, checker failures, unsupported ops, external data, absurd dims, IR
    version too new). While building: ``AccuracyError`` (the engine is not stored), ``BuildError``,
    ``CacheBusy``. The report says which path was taken and carries the accuracy measured.
    """
    spec = request.spec
    backend = _backend(spec.backend)
    source = load_model(request.model, limits=_limits(backend), op_support=backend.op_support())
    check_profiles(spec, source.inputs)
    samples = _calibration(request, source)
    check = _check_samples(request, source, samples)
    if check is None and spec.max_accuracy_drop is not None:
        raise ConfigError(
            describe(
                "an accuracy bound needs samples to measure accuracy on",
                seen=f"max_accuracy_drop={spec.max_accuracy_drop}, no validation or calibration data",
                fix="pass --validation DIR (or --calibration DIR), or drop --max-accuracy-drop",
            )
        )
    verify = (
        None if check is None else AccuracyVerifier(backend, source, spec, check, progress=request.progress)
    )
    store = request.cache if isinstance(request.cache, EngineStore) else EngineStore(request.cache)
    return obtain_engine(
        source,
        spec,
        backend,
        store,
        calibration=_drawn_for_calibration(samples, spec),
        verify=verify,
        progress=request.progress,
        lock_timeout_s=request.lock_timeout_s,
    )


def _drawn_for_calibration(samples: SampleSet | None, spec: BuildSpec) -> SampleSet | None:
    """The calibration samples int8 uses: ``num_samples`` of them, stratified when asked."""
    if samples is None or spec.precision != "int8":
        return None
    cal = spec.calibration or CalibrationSpec()
    return select_samples(samples, cal.num_samples, stratify=cal.stratify_by is not None, seed=cal.seed)


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


def _calibration(request: BuildRequest, source: ModelSource) -> SampleSet | None:
    spec = request.spec
    if request.calibration is None:
        if spec.precision == "int8":
            raise ConfigError(
                describe(
                    "int8 needs calibration data and none was given",
                    fix="pass --calibration DIR: a folder of .npz files with one array per model input "
                    f"({_inputs(source.inputs)})",
                )
            )
        return None
    cal = spec.calibration or CalibrationSpec()
    samples = _read(request.calibration, key_name=cal.stratify_by or STRATIFY_KEY)
    check_samples(samples, source.inputs, what="calibration")
    if cal.stratify_by is not None and samples.keys is None:
        raise ConfigError(
            describe(
                f"calibration is stratified by {cal.stratify_by!r} but the samples hold no such array",
                seen=sorted(samples.inputs),
                fix=f"save one {cal.stratify_by!r} value per sample in the .npz files, or drop --stratify-by",
            )
        )
    _check_within_profiles(samples, request.spec, what="calibration")
    return samples


def _check_samples(
    request: BuildRequest, source: ModelSource, calibration: SampleSet | None
) -> CheckSamples | None:
    """The samples new engines are checked on; read lazily (a cache hit never needs them)."""
    if request.validation is None:
        if calibration is None:
            return None
        return CheckSamples(lambda: _fit(calibration, request), "calibration")
    validation = request.validation
    if isinstance(validation, Path):
        _check_sample_path(validation, what="validation")
    samples_from: SamplesFrom = "validation"

    def load() -> SampleSet:
        samples = _read(validation, key_name=STRATIFY_KEY)
        check_samples(samples, source.inputs, what="validation")
        _check_within_profiles(samples, request.spec, what="validation")
        return _fit(samples, request)

    return CheckSamples(load, samples_from)


def _check_sample_path(path: Path, *, what: str) -> None:
    """The cheap part of reading samples, done before anything is built: the path exists and a
    folder holds ``.npz`` files (their content is checked when first read)."""
    if not path.exists():
        raise ConfigError(
            describe(f"{what} path does not exist", seen=str(path), fix="give a folder or .npz")
        )
    if path.is_dir() and not any(p.suffix == ".npz" for p in path.iterdir()):
        raise ConfigError(
            describe(f"{what} folder {path} holds no .npz files", fix="put .npz files (numpy.savez) in it")
        )


def _read(source: SampleSource, *, key_name: str) -> SampleSet:
    if isinstance(source, SampleSet):
        return source
    return load_samples(Path(source), key_name=key_name)


def _fit(samples: SampleSet, request: BuildRequest) -> SampleSet:
    """At most ``max_check_samples``, trimmed to whole batches when a profile's smallest batch
    would refuse the last, partial one."""
    samples = select_samples(samples, request.max_check_samples)
    spec = request.spec
    smallest = max((p.min[0] for p in spec.profiles if p.min), default=1)
    batch = check_batch_size(spec.max_batch_size, spec.profiles)
    tail = len(samples) % batch
    if 0 < tail < smallest:
        if len(samples) - tail == 0:
            raise ConfigError(
                describe(
                    f"the profiles need batches of at least {smallest} samples",
                    seen=f"{len(samples)} samples",
                    fix=f"give at least {smallest} samples",
                )
            )
        samples = samples.take(range(len(samples) - tail))
    return samples


def _check_within_profiles(samples: SampleSet, spec: BuildSpec, *, what: str) -> None:
    """``ConfigError`` when a sample's non-batch dims fall outside its input's profile."""
    for profile in spec.profiles:
        array = samples.inputs.get(profile.input)
        if array is None or array.ndim != len(profile.min):
            continue
        per_sample = tuple(int(d) for d in array.shape[1:])
        if not all(
            lo <= d <= hi for lo, d, hi in zip(profile.min[1:], per_sample, profile.max[1:], strict=True)
        ):
            raise ConfigError(
                describe(
                    f"{what} samples of input {profile.input!r} have shape {list(array.shape)}, "
                    f"outside the profile {list(profile.min)}..{list(profile.max)}",
                    fix="widen the profile or give samples of an allowed shape",
                )
            )


def _inputs(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in specs)
