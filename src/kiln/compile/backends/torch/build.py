"""Building and refitting torch engine artifacts (the work behind ``TorchBackend.build``/``refit``)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kiln.compile.backends.base import BuildOutput, EngineArtifact, Progress
from kiln.compile.backends.torch.compiler import (
    Forward,
    compile_buckets,
    make_forward,
    numerics_state,
    recording_artifacts,
    row_shapes,
)
from kiln.compile.backends.torch.engine import is_batchable
from kiln.compile.backends.torch.options import parse_options
from kiln.compile.backends.torch.prepare import (
    COMPILE_CACHE_FILE,
    GRAPH_FILE,
    PROGRAM_FILE,
    WEIGHTS_FILE,
    module_from_onnx,
    module_from_program,
    onnx_has_conv2d,
    precision_of,
    program_has_conv2d,
    read_weights,
    source_module,
    weight_mismatch,
    write_graph,
    write_weights,
)
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, RefitUnsupported, describe

if TYPE_CHECKING:
    import onnx

    from kiln.compile.backends.base import Target
    from kiln.model.source import ModelSource


def resident_key(structure_hash: str, spec: BuildSpec, target: Target) -> str:
    """What makes two loaded engines interchangeable up to their weights (the engine key's factors)."""
    factors = [structure_hash, spec.cache_factors(), target.cache_factors()]
    return hashlib.sha256(json.dumps(factors, sort_keys=True, default=str).encode()).hexdigest()


def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


@dataclass(frozen=True)
class Built:
    """A build's artifact files and what it left resident (kept as a standby engine)."""

    output: BuildOutput
    module: torch.nn.Module
    forward: Forward


def build_engine(
    source: ModelSource, spec: BuildSpec, out_dir: Path, *, device: str, progress: Progress | None
) -> Built:
    """Convert, write graph and weights, compile every bucket, write the compile artifacts."""
    options = parse_options(dict(spec.backend_options), spec.max_batch_size)
    if source.format == "pt2":
        has_conv = program_has_conv2d(source.path)
    else:
        assert source.model is not None
        has_conv = onnx_has_conv2d(source.model)
    precision = precision_of(spec, options, has_conv)
    batchable = is_batchable(source.inputs, source.outputs)
    shapes = row_shapes(source.inputs, spec.profiles, batchable)
    buckets: tuple[int | None, ...] = options.buckets if batchable else (None,)
    _report(progress, "converting to torch", 0, 2)
    started = time.perf_counter()
    module = source_module(source, precision, device)
    graph_file = write_graph(source, out_dir)
    weights_bytes = write_weights(module, out_dir / WEIGHTS_FILE)
    converted = time.perf_counter()
    _report(progress, f"compiling {len(buckets)} batch bucket(s)", 1, 2)
    try:
        with recording_artifacts() as found:
            forward = make_forward(module, options)
            warm = compile_buckets(
                forward,
                source.inputs,
                shapes,
                buckets,
                torch.device(device),
                dynamic_batch=options.shapes == "dynamic",
            )
    except (BuildError, RefitUnsupported):
        raise
    except Exception as exc:
        raise BuildError(
            describe(
                "torch.compile failed on the converted model",
                seen=f"{type(exc).__name__}: {str(exc).strip()[:400]}",
                fix="try backend option compile=eager, or report the model",
            )
        ) from exc
    cache = found[0] if found else b""
    (out_dir / COMPILE_CACHE_FILE).write_bytes(cache)
    _report(progress, "compiled", 2, 2)
    extra: dict[str, object] = {
        "device": device,
        "source_format": source.format,
        "float_dtype": str(precision.float_dtype).removeprefix("torch."),
        "channels_last": precision.channels_last,
        "options": options.to_json(),
        "index_guard": source.format == "onnx",
        "weights_bytes": weights_bytes,
        "compile_cache_bytes": len(cache),
        "convert_seconds": round(converted - started, 3),
        "compile_seconds": round(time.perf_counter() - converted, 3),
        "compile_seconds_per_bucket": {str(k): v for k, v in warm.seconds_per_bucket.items()},
        "compile_cache_counters": warm.cache,
        "numerics": numerics_state(),
    }
    output = BuildOutput(
        engine_file=graph_file,
        files=(graph_file, WEIGHTS_FILE, COMPILE_CACHE_FILE),
        build_path="build",
        extra=extra,
    )
    return Built(output, module, forward)


def _host_initializers(model: onnx.ModelProto) -> dict[str, bytes]:
    from kiln.compile.backends.torch.onnx_graph import is_host_initializer

    return {t.name: t.SerializeToString() for t in model.graph.initializer if is_host_initializer(t)}


def refit_engine(artifact: EngineArtifact, source: ModelSource, out_dir: Path) -> BuildOutput:
    """New weights into a copy of ``artifact`` (see ``TorchBackend.refit``)."""
    started = time.perf_counter()
    manifest = artifact.manifest
    base_hash = str(manifest.fingerprint.get("structure_hash"))
    if source.fingerprint.structure_hash != base_hash:
        raise RefitUnsupported(
            describe(
                "the model's structure differs from the engine's",
                seen=source.fingerprint.short,
                fix="build it",
            )
        )
    spec = BuildSpec.from_json(manifest.spec)
    options = parse_options(dict(spec.backend_options), spec.max_batch_size)
    precision = precision_of(spec, options, bool(manifest.extra.get("channels_last")))
    graph_file = manifest.engine_file
    if source.format == "pt2" and graph_file == PROGRAM_FILE:
        module = module_from_program(source.path, source.outputs, precision, "cpu")
        shutil.copyfile(source.path, out_dir / PROGRAM_FILE)
    elif source.format == "onnx" and graph_file == GRAPH_FILE and source.model is not None:
        import onnx

        base_graph = onnx.load_model_from_string((artifact.path / GRAPH_FILE).read_bytes())
        if _host_initializers(base_graph) != _host_initializers(source.model):
            raise RefitUnsupported(
                describe("the model's shape constants (small integer initializers) changed", fix="build it")
            )
        module = module_from_onnx(source.model, precision, "cpu", with_weights=True)
        shutil.copyfile(artifact.path / GRAPH_FILE, out_dir / GRAPH_FILE)
    else:
        raise RefitUnsupported(
            describe(f"a {source.format} model cannot refit an engine built from {graph_file}")
        )
    problem = weight_mismatch(module, read_weights(artifact.path / WEIGHTS_FILE))
    if problem is not None:
        raise RefitUnsupported(
            describe("the new weights do not fit the engine", seen=problem, fix="build it")
        )
    write_weights(module, out_dir / WEIGHTS_FILE)
    shutil.copyfile(artifact.path / COMPILE_CACHE_FILE, out_dir / COMPILE_CACHE_FILE)
    extra = {**manifest.extra, "refit_seconds": round(time.perf_counter() - started, 3)}
    return BuildOutput(
        engine_file=graph_file,
        files=(graph_file, WEIGHTS_FILE, COMPILE_CACHE_FILE),
        build_path="refit",
        extra=extra,
    )
