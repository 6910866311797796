"""Loading a torch engine artifact: into a standby engine by copying weights, or by compiling from
the artifact's compile cache (the work behind ``TorchBackend.load``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import torch

from kiln.compile.backends.base import EngineArtifact, Target
from kiln.compile.backends.torch.build import resident_key
from kiln.compile.backends.torch.compiler import (
    compile_buckets,
    load_artifacts,
    make_forward,
    pinned_numerics,
    row_shapes,
)
from kiln.compile.backends.torch.engine import TorchEngine, is_batchable, make_runner_factory
from kiln.compile.backends.torch.options import TorchOptions, parse_options
from kiln.compile.backends.torch.prepare import (
    COMPILE_CACHE_FILE,
    WEIGHTS_FILE,
    Precision,
    artifact_module,
    copy_weights,
    precision_of,
    read_weights,
    weight_mismatch,
)
from kiln.compile.backends.torch.resident import Resident, StandbyPool, device_weight_bytes
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, CacheCorrupt, EngineFailed, describe

log = logging.getLogger(__name__)


def load_engine(artifact: EngineArtifact, *, device: str, pool: StandbyPool | None) -> TorchEngine:
    """See ``TorchBackend.load``."""
    started = time.perf_counter()
    manifest = artifact.manifest
    spec = BuildSpec.from_json(manifest.spec)
    options = parse_options(dict(spec.backend_options), spec.max_batch_size)
    precision = precision_of(spec, options, bool(manifest.extra.get("channels_last")))
    key = resident_key(
        str(manifest.fingerprint.get("structure_hash")), spec, Target.from_json(manifest.target)
    )
    batchable = is_batchable(manifest.inputs, manifest.outputs)
    shapes = row_shapes(manifest.inputs, spec.profiles, batchable)
    buckets: tuple[int | None, ...] = options.buckets if batchable else (None,)
    weights = read_weights(artifact.path / WEIGHTS_FILE)
    report: dict[str, object] = {}
    resident = _from_standby(pool, key, weights, report) if pool is not None else None
    if resident is None:
        _check_free_memory(device, manifest.extra.get("weights_bytes"))
        resident = _compile(
            artifact,
            key=key,
            options=options,
            precision=precision,
            weights=weights,
            buckets=buckets,
            shapes=shapes,
            device=device,
            report=report,
        )
    report["seconds"] = round(time.perf_counter() - started, 4)
    has_flag = bool(manifest.extra.get("index_guard"))
    return TorchEngine(
        resident,
        inputs=manifest.inputs,
        outputs=manifest.outputs,
        profiles=spec.profiles,
        max_batch_size=spec.max_batch_size,
        buckets=options.buckets,
        make_runner=make_runner_factory(
            resident,
            manifest.inputs,
            shapes,
            buckets,
            graphs=options.cuda_graphs,
            has_flag=has_flag,
            numerics=_numerics(manifest.extra),
        ),
        release=pool.put if pool is not None else None,
        has_flag=has_flag,
        load_report=report,
        name=manifest.key[:12] or artifact.path.name,
    )


def _from_standby(
    pool: StandbyPool, key: str, weights: Mapping[str, torch.Tensor], report: dict[str, object]
) -> Resident | None:
    resident = pool.take(key)
    if resident is None:
        return None
    try:
        seconds = resident.load_weights(weights)
    except ValueError as exc:
        log.warning("standby engine does not fit the new weights (%s); compiling instead", exc)
        resident.free()
        return None
    report.update(
        path="standby-refit", weight_copy_seconds=round(seconds, 4), runners=len(resident.spare_runners)
    )
    return resident


def _compile(
    artifact: EngineArtifact,
    *,
    key: str,
    options: TorchOptions,
    precision: Precision,
    weights: Mapping[str, torch.Tensor],
    buckets: tuple[int | None, ...],
    shapes: list[tuple[int, ...]],
    device: str,
    report: dict[str, object],
) -> Resident:
    manifest = artifact.manifest
    numerics = _numerics(manifest.extra)
    cache_path = artifact.path / COMPILE_CACHE_FILE
    started = time.perf_counter()
    entries = (
        load_artifacts(cache_path.read_bytes()) if cache_path.is_file() and cache_path.stat().st_size else 0
    )
    module = artifact_module(artifact.path, manifest.engine_file, manifest.outputs, precision, device)
    problem = weight_mismatch(module, weights)
    if problem is not None:
        raise CacheCorrupt(describe("engine weights do not fit its graph", seen=problem, fix="rebuild"))
    copy_weights(module, weights)
    prepared = time.perf_counter()
    try:
        forward = make_forward(module, options)
        with pinned_numerics(numerics):
            warm = compile_buckets(
                forward,
                manifest.inputs,
                shapes,
                buckets,
                torch.device(device),
                dynamic_batch=options.shapes == "dynamic",
            )
    except Exception as exc:
        raise BuildError(
            describe(
                "compiling the engine failed",
                seen=f"{type(exc).__name__}: {str(exc)[:300]}",
                fix="rebuild it",
            )
        ) from exc
    report.update(
        path="compiled",
        cache_entries_loaded=entries,
        prepare_seconds=round(prepared - started, 4),
        compile_seconds=round(time.perf_counter() - prepared, 4),
        compile_seconds_per_bucket={str(k): v for k, v in warm.seconds_per_bucket.items()},
        compile_cache_counters=warm.cache,
    )
    return Resident(key, module, forward, torch.device(device), device_weight_bytes(module))


def _numerics(extra: Mapping[str, object]) -> dict[str, object]:
    value = extra.get("numerics")
    return dict(value) if isinstance(value, dict) else {}


def _check_free_memory(device: str, weights_bytes: object) -> None:
    if not device.startswith("cuda") or not isinstance(weights_bytes, int):
        return
    free, total = torch.cuda.mem_get_info(torch.device(device))
    if weights_bytes > free:
        raise EngineFailed(
            describe(
                f"not enough free memory on {device} to load the engine's weights",
                seen=f"{weights_bytes} bytes needed, {free} of {total} free",
                fix="unload other models, or lower their memory budgets",
            )
        )
