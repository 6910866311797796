"""The samples one build reads: calibration samples and the samples new engines are checked on.

Both are read when first needed, not before: a cache hit reads neither, a weight-only update that
reuses the stored calibration ranges reads only the check samples. What costs nothing (the path
exists, a folder holds ``.npz`` files, int8 has calibration at all) is checked up front; the content
(names, datatypes, shapes against the model and its profiles) when read, before any of it is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kiln.cache.verify import CheckSamples, check_batch_size
from kiln.compile.data import STRATIFY_KEY, SampleSet, check_samples, load_samples, select_samples
from kiln.compile.spec import BuildSpec, CalibrationSpec
from kiln.errors import ConfigError, describe
from kiln.types import TensorSpec

SampleSource = Path | SampleSet
"""A folder (or one ``.npz`` file) of samples, or samples already in memory."""


class BuildSamples:
    """The calibration and check samples of one build, for a model with ``inputs``."""

    def __init__(
        self,
        spec: BuildSpec,
        inputs: Sequence[TensorSpec],
        *,
        calibration: SampleSource | None,
        validation: SampleSource | None,
        max_check_samples: int,
    ) -> None:
        self._spec = spec
        self._inputs = tuple(inputs)
        self._calibration_source = calibration
        self._validation_source = validation
        self._max_check_samples = max_check_samples
        self._calibration: SampleSet | None = None
        self._check_up_front()

    def _check_up_front(self) -> None:
        if self._calibration_source is None and self._spec.precision == "int8":
            raise ConfigError(
                describe(
                    "int8 needs calibration data and none was given",
                    fix="pass --calibration DIR: a folder of .npz files with one array per model input "
                    f"({describe_inputs(self._inputs)})",
                )
            )
        for source, what in (
            (self._calibration_source, "calibration"),
            (self._validation_source, "validation"),
        ):
            if isinstance(source, Path):
                check_sample_path(source, what=what)

    @property
    def has_check_samples(self) -> bool:
        return self._validation_source is not None or self._calibration_source is not None

    def calibration(self) -> SampleSet:
        """Every calibration sample, read and checked once."""
        if self._calibration is None:
            if self._calibration_source is None:
                raise ConfigError(describe("no calibration data was given", fix="pass --calibration DIR"))
            self._calibration = self._read_calibration(self._calibration_source)
        return self._calibration

    def drawn_for_calibration(self) -> SampleSet:
        """The ``num_samples`` calibration samples int8 calibrates on (stratified when asked)."""
        cal = self._spec.calibration or CalibrationSpec()
        stratify = cal.stratify_by is not None
        return select_samples(self.calibration(), cal.num_samples, stratify=stratify, seed=cal.seed)

    def check_samples(self) -> CheckSamples | None:
        """What new engines are checked on: the validation samples, else the calibration samples
        (all of them), else nothing."""
        if self._validation_source is not None:
            validation = self._validation_source
            return CheckSamples(lambda: self._fit(self._read_checked(validation, "validation")), "validation")
        if self._calibration_source is not None:
            return CheckSamples(lambda: self._fit(self.calibration()), "calibration")
        return None

    def _read_calibration(self, source: SampleSource) -> SampleSet:
        cal = self._spec.calibration or CalibrationSpec()
        samples = self._read_checked(source, "calibration", key_name=cal.stratify_by or STRATIFY_KEY)
        if cal.stratify_by is not None and samples.keys is None:
            raise ConfigError(
                describe(
                    f"calibration is stratified by {cal.stratify_by!r} but the samples hold no such array",
                    seen=sorted(samples.inputs),
                    fix=f"save one {cal.stratify_by!r} value per sample in each .npz file, "
                    "or drop --stratify-by",
                )
            )
        return samples

    def _read_checked(self, source: SampleSource, what: str, *, key_name: str = STRATIFY_KEY) -> SampleSet:
        samples = source if isinstance(source, SampleSet) else load_samples(Path(source), key_name=key_name)
        check_samples(samples, self._inputs, what=what)
        check_within_profiles(samples, self._spec, what=what)
        return samples

    def _fit(self, samples: SampleSet) -> SampleSet:
        """At most ``max_check_samples``, trimmed to whole batches when a profile's smallest batch
        would refuse the last, partial one."""
        samples = select_samples(samples, self._max_check_samples)
        smallest = max((p.min[0] for p in self._spec.profiles if p.min), default=1)
        tail = len(samples) % check_batch_size(self._spec.max_batch_size, self._spec.profiles)
        if 0 < tail < smallest:
            if len(samples) == tail:
                raise ConfigError(
                    describe(
                        f"the profiles need batches of at least {smallest} samples",
                        seen=f"{len(samples)} samples",
                        fix=f"give at least {smallest} samples",
                    )
                )
            samples = samples.take(range(len(samples) - tail))
        return samples


def check_sample_path(path: Path, *, what: str) -> None:
    """The path exists and, if a folder, holds ``.npz`` files. ``ConfigError`` otherwise."""
    if not path.exists():
        raise ConfigError(
            describe(f"{what} path does not exist", seen=str(path), fix="give a folder or .npz")
        )
    if path.is_dir() and not any(p.suffix == ".npz" for p in path.iterdir()):
        raise ConfigError(
            describe(f"{what} folder {path} holds no .npz files", fix="put .npz files (numpy.savez) in it")
        )


def check_within_profiles(samples: SampleSet, spec: BuildSpec, *, what: str) -> None:
    """``ConfigError`` when a sample's non-batch dims fall outside its input's profile."""
    for profile in spec.profiles:
        array = samples.inputs.get(profile.input)
        if array is None or array.ndim != len(profile.min):
            continue
        dims = zip(profile.min[1:], array.shape[1:], profile.max[1:], strict=True)
        if not all(lo <= int(d) <= hi for lo, d, hi in dims):
            raise ConfigError(
                describe(
                    f"{what} samples of input {profile.input!r} have shape {list(array.shape)}, "
                    f"outside the profile {list(profile.min)}..{list(profile.max)}",
                    fix="widen the profile or give samples of an allowed shape",
                )
            )


def describe_inputs(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in specs)
