"""``repo/<model>/config.yaml``: how one model of the repository is built and served.

Pydantic models with ``extra="forbid"`` at every level: an unknown or misspelt key is an error that
names the key, the file and the keys allowed there. Every number is bounded; units are in the names.
A model without ``config.yaml`` gets :data:`DEFAULT_CONFIG` (fp32 on ONNX Runtime, batches up to
32). :mod:`kiln.repository.convert` turns a config into a ``BuildSpec`` and a runtime
``ModelConfig``. ``docs/repository.md`` lists every field (see :func:`config_fields`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any, Literal, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kiln.compile.registry import BackendName
from kiln.compile.spec import CalibrationMethod, Precision, Task
from kiln.errors import ConfigError, describe
from kiln.runtime.config import MAX_BATCH_SIZE_LIMIT, MAX_INSTANCES, MAX_QUEUE_DELAY_US_LIMIT

Completeness: TypeAlias = Literal["auto", "marker", "rename"]
MAX_VERSIONS_SERVED = 16


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_folder(value: str | None) -> str | None:
    if value is None:
        return None
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{value!r} must be a folder inside the model folder (relative, no '..')")
    return value


class CalibrationConfig(_Section):
    """int8 calibration: which samples, how many, and how ranges are chosen."""

    samples_dir: str = Field(
        default="calibration",
        description="Folder of .npz calibration samples, relative to the model folder (used for int8).",
    )
    method: CalibrationMethod = Field(
        default="minmax", description="How int8 ranges are chosen: minmax, entropy (KL search) or percentile."
    )
    num_samples: int = Field(
        default=256, ge=1, le=1_000_000, description="Calibration samples used, at most."
    )
    stratify_by: str | None = Field(
        default=None,
        description="Draw samples evenly across the values of this array in the files (e.g. _key).",
    )
    percentile: float = Field(
        default=99.999, gt=50.0, le=100.0, description="Clip point of method percentile."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the calibration sample draw.")

    @field_validator("samples_dir")
    @classmethod
    def check_samples_dir(cls, value: str) -> str | None:
        return _relative_folder(value)


class QuantizationConfig(_Section):
    """int8 placement: per-channel weights and what stays in floating point."""

    per_channel: bool = Field(default=False, description="Quantize weights per output channel.")
    keep_fp32_nodes: tuple[str, ...] = Field(default=(), description="Node names left in fp32.")
    keep_fp32_op_types: tuple[str, ...] = Field(
        default=(), description="Op types left in fp32 (e.g. Gather)."
    )
    float_output_op_types: tuple[str, ...] = Field(
        default=(), description="int8 op types whose results go on as floats (e.g. MatMul, Gemm)."
    )


class AccuracyConfig(_Section):
    """The accuracy gate every new engine passes against the fp32 model before it serves."""

    validation_dir: str | None = Field(
        default=None,
        description="Folder of .npz validation samples, relative to the model folder. Default: the "
        "calibration samples for int8, none otherwise.",
    )
    task: Task = Field(
        default="none",
        description="What the output means: classifier (top-1 agreement), ctr (AUC, needs _label), "
        "ranker (Spearman) or none (relative L2 error).",
    )
    max_accuracy_drop: float | None = Field(
        default=None,
        ge=0.0,
        le=1e6,
        description="Largest accuracy drop accepted (1 - agreement, AUC loss, 1 - Spearman, rel. L2); "
        "unset: measured, not enforced.",
    )

    @field_validator("validation_dir")
    @classmethod
    def check_validation_dir(cls, value: str | None) -> str | None:
        return _relative_folder(value)


class ProfileConfig(_Section):
    """Shapes one input may take (batch axis included)."""

    min: tuple[int, ...] = Field(description="Smallest shape, e.g. [1, 13].")
    opt: tuple[int, ...] = Field(description="Shape to optimize for, e.g. [64, 13].")
    max: tuple[int, ...] = Field(description="Largest shape, e.g. [256, 13].")


class BatchingSection(_Section):
    """Dynamic batching of the model's requests."""

    max_queue_delay_us: int = Field(
        default=1000,
        ge=0,
        le=MAX_QUEUE_DELAY_US_LIMIT,
        description="Longest a request waits for a fuller batch, in microseconds.",
    )
    preferred_batch_sizes: tuple[int, ...] = Field(
        default=(), description="Batch sizes that run at once when reached (the engine's profile buckets)."
    )
    pad_to_preferred: bool = Field(
        default=True, description="Pad batches with zero rows to the next preferred size."
    )
    max_queue_size: int = Field(
        default=1024,
        ge=1,
        le=10_000_000,
        description="Requests waiting at most; one more is rejected at once (503).",
    )
    dispatch_when_idle: bool = Field(
        default=True,
        description="Run what is queued at once when none of the model's batches is running; "
        "false: wait max_queue_delay_us for a fuller batch even on an idle model.",
    )
    default_timeout_s: float | None = Field(
        default=None,
        gt=0.0,
        le=86_400.0,
        description="Deadline of requests that give none; unset: no deadline.",
    )


class InstancesConfig(_Section):
    """Execution instances (each on a worker thread of its own)."""

    count: int = Field(default=1, ge=1, le=MAX_INSTANCES, description="Instances of the primary engine.")
    fallback_count: int = Field(
        default=1, ge=1, le=MAX_INSTANCES, description="Instances of the fallback engine."
    )


class VersionPolicyConfig(_Section):
    """Which versions are served, and how many stay loaded."""

    latest: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSIONS_SERVED,
        description="Serve the newest N complete versions (default 1); the newest answers requests "
        "that name no version.",
    )
    specific: tuple[int, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_VERSIONS_SERVED,
        description="Serve exactly these versions.",
    )
    keep_loaded: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSIONS_SERVED,
        description="Versions kept resident, the served ones included (2 keeps the previous one for an "
        "instant rollback). Default: the number served.",
    )
    drain_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="Longest a replaced version may take to finish its requests.",
    )
    warmup_batch_sizes: tuple[int, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Batch sizes a new version is warmed up and checked on, each in 1..max_batch_size; "
        "unset: the engine's plan (every bucket for engines that prepare each shape, such as TensorRT "
        "and torch; batch 1 for ONNX Runtime on CPU).",
    )

    @model_validator(mode="after")
    def _one_choice(self) -> VersionPolicyConfig:
        if self.latest is not None and self.specific is not None:
            raise ValueError(f"give latest ({self.latest}) or specific ({list(self.specific)}), not both")
        if self.specific is not None and any(v < 1 for v in self.specific):
            raise ValueError(f"specific versions are positive integers, seen {list(self.specific)}")
        return self

    @property
    def num_served(self) -> int:
        return len(set(self.specific)) if self.specific is not None else (self.latest or 1)


class FallbackSection(_Section):
    """A second engine of the same version, used while the primary is dead or unhealthy."""

    precision: Precision = Field(default="fp32", description="Precision of the fallback engine.")
    backend: BackendName = Field(default="onnxruntime", description="Backend of the fallback engine.")


class ModelRepoConfig(_Section):
    """The whole ``config.yaml`` of one model. Every section is optional."""

    backend: BackendName = Field(
        default="onnxruntime", description="Backend that builds and runs the engine."
    )
    backend_options: dict[str, str] = Field(
        default_factory=dict,
        description="Backend-specific knobs as name: value strings (e.g. torch: {compile: eager}).",
    )
    precision: Precision = Field(
        default="fp32", description="fp32, fp16, bf16 or int8 (QDQ from calibration)."
    )
    max_batch_size: int = Field(
        default=32,
        ge=1,
        le=MAX_BATCH_SIZE_LIMIT,
        description="Most rows per engine run; the engine is built for it. Default 32 (1 when the model "
        "has no batch axis and this is not set).",
    )
    profiles: dict[str, ProfileConfig] = Field(
        default_factory=dict, description="Shape profiles per input name: {min, opt, max}."
    )
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    accuracy: AccuracyConfig = Field(default_factory=AccuracyConfig)
    batching: BatchingSection = Field(default_factory=BatchingSection)
    instances: InstancesConfig = Field(default_factory=InstancesConfig)
    version_policy: VersionPolicyConfig = Field(default_factory=VersionPolicyConfig)
    fallback: FallbackSection | None = Field(
        default=None, description="A second engine for when the primary fails, e.g. {precision: fp32}."
    )
    completeness: Completeness = Field(
        default="auto",
        description="When a version folder counts as complete: marker (a READY file), rename (appeared "
        "whole and unchanged for settle_s), auto (marker if any version has a READY file).",
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> ModelRepoConfig:
        for size in self.batching.preferred_batch_sizes:
            if not 1 <= size <= self.max_batch_size:
                raise ValueError(
                    f"batching.preferred_batch_sizes {list(self.batching.preferred_batch_sizes)} must lie in "
                    f"1..max_batch_size ({self.max_batch_size})"
                )
        for name, profile in self.profiles.items():
            _check_profile(name, profile, self.max_batch_size)
        _check_warmup_sizes(self.version_policy.warmup_batch_sizes, self.max_batch_size)
        if self.accuracy.max_accuracy_drop is not None and not self.has_check_samples:
            raise ValueError(
                f"accuracy.max_accuracy_drop ({self.accuracy.max_accuracy_drop}) needs samples to measure "
                f"on: set accuracy.validation_dir (precision is {self.precision})"
            )
        fallback = self.fallback
        if fallback is not None and (fallback.precision, fallback.backend) == (self.precision, self.backend):
            raise ValueError(
                f"fallback {{precision: {fallback.precision}, backend: {fallback.backend}}} is the primary "
                "engine again; choose another precision or backend, or remove fallback"
            )
        return self

    @property
    def has_check_samples(self) -> bool:
        return self.accuracy.validation_dir is not None or self.precision == "int8"

    @property
    def max_batch_size_given(self) -> bool:
        return "max_batch_size" in self.model_fields_set


def _check_profile(name: str, profile: ProfileConfig, max_batch_size: int) -> None:
    if not (len(profile.min) == len(profile.opt) == len(profile.max) >= 1):
        raise ValueError(f"profiles.{name}: min, opt and max need the same rank, seen {profile}")
    for lo, mid, hi in zip(profile.min, profile.opt, profile.max, strict=True):
        if not 1 <= lo <= mid <= hi:
            raise ValueError(
                f"profiles.{name}: need 1 <= min <= opt <= max in every dimension, seen min "
                f"{list(profile.min)}, opt {list(profile.opt)}, max {list(profile.max)}"
            )
    if profile.max[0] > max_batch_size:
        raise ValueError(
            f"profiles.{name} allows batch {profile.max[0]}, above max_batch_size {max_batch_size}"
        )


def _check_warmup_sizes(sizes: tuple[int, ...] | None, max_batch_size: int) -> None:
    if sizes is None:
        return
    bad = [size for size in sizes if not 1 <= size <= max_batch_size]
    if bad:
        raise ValueError(
            f"version_policy.warmup_batch_sizes {list(sizes)} must lie in 1..max_batch_size "
            f"({max_batch_size}), seen {bad}; e.g. [1], or remove the key to let the engine decide"
        )
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"version_policy.warmup_batch_sizes {list(sizes)} repeat a size; list each once")


DEFAULT_CONFIG = ModelRepoConfig()
"""What a model folder without ``config.yaml`` is served with."""


def parse_model_config(text: str | None, *, where: str) -> ModelRepoConfig:
    """Parse ``config.yaml`` text (``None``: no file, the defaults). ``ConfigError`` naming ``where``
    (the file) and every problem: unknown keys (with the allowed ones), bad values, bad YAML."""
    if text is None:
        return DEFAULT_CONFIG
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(describe(f"{where} is not valid YAML", seen=str(exc).replace("\n", " "))) from None
    if data is None:
        return DEFAULT_CONFIG
    if not isinstance(data, dict):
        raise ConfigError(
            describe(
                f"{where} must be a mapping of keys", seen=type(data).__name__, fix="write key: value lines"
            )
        )
    try:
        return ModelRepoConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise ConfigError(f"{where}: {problems}") from None


def _problem(error: Any) -> str:
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc) or "config"
    if error["type"] == "extra_forbidden":
        allowed = allowed_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {key!r}; {hint}allowed here: {', '.join(allowed)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "value_error" or not loc:
        return f"{key}: {message}" if loc else message
    return f"{key}: {message} (seen: {error.get('input')!r})"


def allowed_keys(path: tuple[str, ...]) -> list[str]:
    """The keys allowed at ``path`` of ``config.yaml`` (e.g. ``("batching",)``; ``()`` the top)."""
    model: type[BaseModel] = ModelRepoConfig
    parts = list(path)
    while parts:
        part = parts.pop(0)
        field = model.model_fields.get(part)
        section = None if field is None else _section_type(field.annotation)
        if section is None:
            return []
        if section is ProfileConfig:
            if not parts:
                return []  # the keys of profiles are input names
            parts.pop(0)
        model = section
    return sorted(model.model_fields)


def _section_type(annotation: object) -> type[BaseModel] | None:
    """The section model of a field: its type, or the model inside ``X | None`` / ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def config_fields() -> Iterator[tuple[str, str]]:
    """Every field of ``config.yaml`` as (dotted key, description), for the docs."""

    def walk(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str]]:
        for name, field in model.model_fields.items():
            section = _section_type(field.annotation)
            key = f"{prefix}{name}"
            if section is ProfileConfig:
                yield from walk(section, f"{key}.<input>.")
            elif section is not None:
                yield from walk(section, f"{key}.")
            else:
                yield key, field.description or ""

    yield from walk(ModelRepoConfig, "")
