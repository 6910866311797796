"""Knobs of one served model: batching, instances, retries, fallback probing and version policy.

Frozen dataclasses with units in their names. Values are checked when built; a bad value raises
``ConfigError`` naming the field, the value seen and the allowed range. Files, the CLI and HTTP parse
into these through pydantic models at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from kiln.errors import ConfigError, describe

MAX_BATCH_SIZE_LIMIT = 65536
MAX_QUEUE_DELAY_US_LIMIT = 60_000_000
MAX_INSTANCES = 64


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(describe(f"{name} is out of range", seen=value, fix=f"use {low}..{high}"))


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(describe(f"{name} must be > 0", seen=value, fix="give a positive number"))


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """How one model's requests are merged into engine runs.

    Attributes:
        max_batch_size: most rows (batch axis 0) one engine run takes. 1 turns merging off.
        max_queue_delay_us: longest a request waits for a fuller batch, counted from the oldest
            waiting request of that batch. 0 runs whatever is queued as soon as an instance is free.
        preferred_batch_sizes: batch sizes the engine runs best at (its profile buckets). A batch
            that reaches one runs at once without waiting for ``max_queue_delay_us``, provided it
            takes more of the waiting rows than it leaves behind.
        pad_to_preferred: pad a batch with zero rows up to the nearest preferred size (or
            ``max_batch_size``, for engines that prepare each shape; an engine that runs any
            shape, such as ONNX Runtime on CPU, runs a batch above the largest preferred size on
            its rows); the padding rows are sliced off the results.
        max_queue_size: requests waiting (not yet running) at most; one more is rejected at once
            with ``Overloaded``.
        dispatch_when_idle: when no batch of the model is running and an instance is free, run
            what is queued at once instead of waiting ``max_queue_delay_us`` for company. Batches
            still grow while the instances are busy (requests that arrive meanwhile are merged into
            the next run), and ``max_queue_delay_us`` still bounds the wait then. Off: every batch
            below ``max_batch_size`` (or a preferred size) waits out the delay, even on an idle
            model.
        default_timeout_s: deadline of requests that bring none; ``None`` waits as long as needed.
    """

    max_batch_size: int = 8
    max_queue_delay_us: int = 1000
    preferred_batch_sizes: tuple[int, ...] = ()
    pad_to_preferred: bool = True
    max_queue_size: int = 1024
    dispatch_when_idle: bool = True
    default_timeout_s: float | None = None

    def __post_init__(self) -> None:
        _check_range("max_batch_size", self.max_batch_size, 1, MAX_BATCH_SIZE_LIMIT)
        _check_range("max_queue_delay_us", self.max_queue_delay_us, 0, MAX_QUEUE_DELAY_US_LIMIT)
        _check_range("max_queue_size", self.max_queue_size, 1, 10_000_000)
        _check_positive("default_timeout_s", self.default_timeout_s)
        sizes = self.preferred_batch_sizes
        if len(set(sizes)) != len(sizes):
            raise ConfigError(describe("preferred_batch_sizes repeat a size", seen=list(sizes)))
        for size in sizes:
            if not 1 <= size <= self.max_batch_size:
                raise ConfigError(
                    describe(
                        f"preferred batch size {size} does not fit max_batch_size {self.max_batch_size}",
                        seen=list(sizes),
                        fix=f"use sizes in 1..{self.max_batch_size} or raise max_batch_size",
                    )
                )
        object.__setattr__(self, "preferred_batch_sizes", tuple(sorted(sizes)))

    @property
    def max_queue_delay_s(self) -> float:
        return self.max_queue_delay_us / 1e6


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """Retries of a batch after a transient engine failure (``EngineFailed``).

    Attributes:
        max_retries: runs after the first one, each on a freshly built instance, and only while the
            batch's latest deadline has not passed. ``InvalidInput`` is never retried.
    """

    max_retries: int = 2

    def __post_init__(self) -> None:
        _check_range("max_retries", self.max_retries, 0, 16)


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    """How traffic returns from a fallback engine to a recovered primary.

    Attributes:
        probe_interval_s: time between probes of an unhealthy or dead primary. A probe builds a
            new instance from the resident engine and runs one small batch on it.
        probe_in_background: probe on a timer; off, the owner calls ``ModelSlot.probe()`` itself.
    """

    probe_interval_s: float = 5.0
    probe_in_background: bool = True

    def __post_init__(self) -> None:
        _check_positive("probe_interval_s", self.probe_interval_s)


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which versions stay loaded, and how a replaced version is released.

    Attributes:
        max_loaded_versions: versions kept resident, the active one included. 1 releases the old
            version after each swap; 2 keeps the previous one loaded for an instant rollback.
        drain_timeout_s: longest a replaced version may take to finish the requests pinned to it;
            requests still queued for it after that fail with ``NotReady``.
        check_finite: fail a new version whose warm-up outputs hold NaN or Inf.
        rollback_depth: earlier versions remembered for ``rollback()``.
        warmup_batch_sizes: the batch sizes a new version's engines are warmed up and checked
            on. ``None`` (the default): each engine's own plan (``kiln.runtime.warmup``): 1, every
            preferred size and ``max_batch_size`` for engines that prepare each shape on first use
            (``prepares_per_shape``: TensorRT profiles, CUDA graphs); batch 1 alone for engines
            that run any size unprepared (ONNX Runtime on CPU), where a run of every size would
            only take cores from the version still serving. Given, it overrides both plans.
    """

    max_loaded_versions: int = 1
    drain_timeout_s: float = 30.0
    check_finite: bool = True
    rollback_depth: int = 8
    warmup_batch_sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _check_range("max_loaded_versions", self.max_loaded_versions, 1, 16)
        _check_positive("drain_timeout_s", self.drain_timeout_s)
        _check_range("rollback_depth", self.rollback_depth, 1, 1024)
        sizes = self.warmup_batch_sizes
        if sizes is not None:
            if not sizes or len(set(sizes)) != len(sizes) or any(size < 1 for size in sizes):
                raise ConfigError(
                    describe(
                        "warmup_batch_sizes must be distinct sizes >= 1",
                        seen=list(sizes),
                        fix="e.g. (1,), or None for every batch size the model serves",
                    )
                )
            object.__setattr__(self, "warmup_batch_sizes", tuple(sorted(sizes)))


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Everything the runtime needs to serve one model, besides its engines.

    Attributes:
        num_instances: execution instances of the primary engine, each on its own worker thread;
            also the number of batches of one version that run at the same time.
        num_fallback_instances: instances of the fallback engine, when a version has one.
        max_memory_bytes: budget for everything the model's resident versions hold (their
            engines' ``memory_bytes()``: weights, instance buffers, captured graphs); a version
            that would exceed it fails to load with a message naming the sizes. ``None``: no
            budget. A hot swap holds two versions at once, so give twice one version's size.
        batching / retry / fallback / versions: see each class.
    """

    num_instances: int = 1
    num_fallback_instances: int = 1
    max_memory_bytes: int | None = None
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    versions: VersionPolicy = field(default_factory=VersionPolicy)

    def __post_init__(self) -> None:
        _check_range("num_instances", self.num_instances, 1, MAX_INSTANCES)
        _check_range("num_fallback_instances", self.num_fallback_instances, 1, MAX_INSTANCES)
        sizes = self.versions.warmup_batch_sizes
        if sizes is not None and sizes[-1] > self.batching.max_batch_size:
            raise ConfigError(
                describe(
                    f"warmup batch size {sizes[-1]} exceeds max_batch_size {self.batching.max_batch_size}",
                    seen=list(sizes),
                    fix="warm up on sizes the model serves",
                )
            )
        _check_positive("max_memory_bytes", self.max_memory_bytes)


LIVE_BATCHING_FIELDS = frozenset(
    {"max_queue_delay_us", "max_queue_size", "default_timeout_s", "dispatch_when_idle"}
)
"""Batching settings a served model takes at once (:meth:`kiln.runtime.ModelSlot.reconfigure`):
they are the batcher's, not the loaded versions' (their batch sizes, padding, instances, retries)."""


def settings_needing_reload(old: ModelConfig, new: ModelConfig) -> tuple[str, ...]:
    """The settings that differ between ``old`` and ``new`` and reach only versions loaded after
    them (every setting but :data:`LIVE_BATCHING_FIELDS`), as ``batching.max_batch_size``-style
    names; empty when ``new`` can be applied to a serving model at once."""
    changed: list[str] = []
    for item in fields(ModelConfig):
        before, after = getattr(old, item.name), getattr(new, item.name)
        if item.name != "batching":
            if before != after:
                changed.append(item.name)
            continue
        for knob in fields(BatchingConfig):
            if knob.name in LIVE_BATCHING_FIELDS:
                continue
            if getattr(before, knob.name) != getattr(after, knob.name):
                changed.append(f"batching.{knob.name}")
    return tuple(changed)


def with_live_settings(current: ModelConfig, wanted: ModelConfig) -> ModelConfig:
    """``current`` with ``wanted``'s :data:`LIVE_BATCHING_FIELDS`: what a serving model can take now."""
    live = {name: getattr(wanted.batching, name) for name in LIVE_BATCHING_FIELDS}
    return replace(current, batching=replace(current.batching, **live))
