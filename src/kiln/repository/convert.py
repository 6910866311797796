"""From a model's ``config.yaml`` to what the build pipeline and the runtime take. Pure functions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from kiln.compile.backends.base import LoadOptions
from kiln.compile.spec import BuildSpec, CalibrationSpec, Precision
from kiln.repository.config import ModelRepoConfig
from kiln.runtime.config import BatchingConfig, ModelConfig, VersionPolicy
from kiln.types import ShapeProfile


def build_spec(config: ModelRepoConfig) -> BuildSpec:
    """The primary engine's ``BuildSpec``: precision, int8 calibration and placement, profiles,
    batch limit, backend, task and accuracy bound."""
    return _spec(config, config.precision, config.backend)


def fallback_spec(config: ModelRepoConfig) -> BuildSpec | None:
    """The fallback engine's spec (the primary's, at the fallback's precision and backend), if any."""
    if config.fallback is None:
        return None
    return _spec(config, config.fallback.precision, config.fallback.backend)


def _spec(config: ModelRepoConfig, precision: Precision, backend: str) -> BuildSpec:
    cal, quant = config.calibration, config.quantization
    int8 = precision == "int8"
    calibration = CalibrationSpec(
        method=cal.method,
        num_samples=cal.num_samples,
        percentile=cal.percentile,
        stratify_by=cal.stratify_by,
        seed=cal.seed,
    )
    return BuildSpec(
        precision=precision,
        calibration=calibration if int8 else None,
        per_channel=quant.per_channel if int8 else False,
        keep_fp32_nodes=quant.keep_fp32_nodes,
        keep_fp32_op_types=quant.keep_fp32_op_types,
        float_output_op_types=quant.float_output_op_types if int8 else (),
        profiles=tuple(
            ShapeProfile(name, p.min, p.opt, p.max) for name, p in sorted(config.profiles.items())
        ),
        max_batch_size=config.max_batch_size,
        backend=backend,
        backend_options=tuple(sorted(config.backend_options.items())) if backend == config.backend else (),
        task=config.accuracy.task,
        max_accuracy_drop=config.accuracy.max_accuracy_drop,
    )


@dataclass(frozen=True, slots=True)
class SampleDirs:
    """The sample folders one build reads (absolute; ``None`` when not used)."""

    calibration: Path | None
    validation: Path | None


def sample_dirs(config: ModelRepoConfig, model_dir: Path) -> SampleDirs:
    """Calibration samples only for an int8 engine (primary or fallback); validation samples when
    configured. Both relative to the model folder."""
    precisions = {config.precision, config.fallback.precision if config.fallback else config.precision}
    calibration = model_dir / config.calibration.samples_dir if "int8" in precisions else None
    validation = config.accuracy.validation_dir
    return SampleDirs(calibration, model_dir / validation if validation is not None else None)


def runtime_config(config: ModelRepoConfig, *, batchable: bool = True) -> ModelConfig:
    """The runtime's ``ModelConfig``. ``batchable`` is False when the engine's inputs have no batch
    axis: then, unless ``max_batch_size`` was set on purpose, the model is served one request per run."""
    max_batch = config.max_batch_size if batchable or config.max_batch_size_given else 1
    batching = config.batching
    policy = config.version_policy
    served = policy.num_served
    return ModelConfig(
        num_instances=config.instances.count,
        num_fallback_instances=config.instances.fallback_count,
        batching=BatchingConfig(
            max_batch_size=max_batch,
            max_queue_delay_us=batching.max_queue_delay_us,
            preferred_batch_sizes=tuple(s for s in batching.preferred_batch_sizes if s <= max_batch),
            pad_to_preferred=batching.pad_to_preferred,
            max_queue_size=batching.max_queue_size,
            dispatch_when_idle=batching.dispatch_when_idle,
            default_timeout_s=batching.default_timeout_s,
        ),
        versions=VersionPolicy(
            max_loaded_versions=max(served, policy.keep_loaded or served),
            drain_timeout_s=policy.drain_timeout_s,
            warmup_batch_sizes=_warmup_sizes(policy.warmup_batch_sizes, max_batch),
        ),
    )


def _warmup_sizes(sizes: tuple[int, ...] | None, max_batch: int) -> tuple[int, ...] | None:
    """The configured warm-up sizes that fit ``max_batch`` (1 for a model without batch axis)."""
    if sizes is None:
        return None
    return tuple(s for s in sizes if s <= max_batch) or (1,)


def build_signature(config: ModelRepoConfig) -> str:
    """A short hash of everything in the config that changes the engines built (specs and sample
    folders); a version is rebuilt when it changes. Serving knobs (batching, instances) are not in it."""
    fallback = fallback_spec(config)
    data = {
        "spec": build_spec(config).to_json(),
        "fallback": fallback.to_json() if fallback is not None else None,
        "calibration_dir": config.calibration.samples_dir,
        "validation_dir": config.accuracy.validation_dir,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_options(config: ModelConfig | None, *, fallback: bool, intra_op_threads: int = 0) -> LoadOptions:
    """How an engine of a model registered with ``config`` is loaded: told how many of its
    instances run at once (the fallback's or the primary's count; 1 when the model has no
    config yet), so that a backend choosing threads itself splits the CPUs among them."""
    counts = (1, 1) if config is None else (config.num_instances, config.num_fallback_instances)
    return LoadOptions(intra_op_threads=intra_op_threads, num_instances=counts[1] if fallback else counts[0])
