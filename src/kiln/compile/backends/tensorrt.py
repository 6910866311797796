"""The TensorRT backend (when the ``tensorrt`` package imports): strongly typed engines built from the
fp16/bf16/QDQ-int8 ONNX that kiln's precision passes produce, refitted on weight-only updates.

``build``: precision pass (``kiln.compile.precision``; the INT8 ranges are stored as
``calibration.json`` and reused on refit) -> ONNX parser -> strongly typed network -> one
optimization profile per concurrent instance -> ``engine.plan``, with the timing cache saved as
``timing.cache`` in the artifact (and, given ``timing_cache_dir``, shared by every build for the
same TensorRT version and GPU). ``refit``: the new weights through the same precision pass (INT8:
with the stored ranges), then ``OnnxParserRefitter`` into a copy of the engine: no rebuild.
``load``: deserialize; refused for another TensorRT version or GPU.

Written against the TensorRT 10/11 Python API and not run anywhere kiln is tested (TensorRT cannot be
installed on the GPU machine kiln was measured on): see ``docs/backends.md``.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.compile.backends.base import BuildOutput, EngineArtifact, LoadOptions, Progress, Target
from kiln.compile.backends.tensorrt_plan import (
    BACKEND_NAME,
    check_target,
    input_ranges,
    parse_options,
    timing_cache_name,
    trt_target,
)
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, CacheCorrupt, RefitUnsupported, describe

if TYPE_CHECKING:
    import onnx

    from kiln.compile.backends.tensorrt_engine import TensorRTEngine
    from kiln.model.source import ModelSource

ENGINE_FILE = "engine.plan"
TIMING_FILE = "timing.cache"
CALIBRATION_FILE = "calibration.json"


class _OnnxOnly:
    def unsupported(self, domain: str, op_type: str, opset: int) -> str | None:
        """Every ONNX op is passed on: TensorRT's ONNX parser judges the model at build time."""
        return None


class TensorRTBackend:
    """See the module docstring. ``timing_cache_dir``: where builds share their timing caches."""

    name = BACKEND_NAME

    def __init__(self, *, timing_cache_dir: Path | None = None) -> None:
        self._timing_dir = timing_cache_dir

    def available(self) -> str | None:
        """``None`` when ``tensorrt`` imports and torch sees a CUDA GPU, else why not."""
        try:
            import tensorrt  # noqa: F401
        except ImportError as exc:
            return f"tensorrt is not installed ({exc}); install NVIDIA's `tensorrt` package on a CUDA machine"
        try:
            import torch
        except ImportError:
            return "the tensorrt backend needs torch for device buffers; install kiln with the `torch` extra"
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
        return None

    def target(self) -> Target:
        """TensorRT version, GPU name and compute capability, CUDA and driver."""
        return _machine_target()

    def op_support(self) -> _OnnxOnly:
        return _OnnxOnly()

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
        """Write ``engine.plan``, ``timing.cache`` (and ``calibration.json`` for int8)."""
        import tensorrt as trt

        options = parse_options(dict(spec.backend_options))
        model, table = _precise(source, spec, calibration, calibration_cache)
        out_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(trt))
        _parse(trt, network, logger, model)
        config = builder.create_builder_config()
        if spec.workspace_bytes:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
        if options.refit:
            config.set_flag(trt.BuilderFlag.REFIT)
        config.builder_optimization_level = options.opt_level
        shared = self._timing_dir / timing_cache_name(self.target()) if self._timing_dir else None
        timing = config.create_timing_cache(shared.read_bytes() if shared and shared.is_file() else b"")
        config.set_timing_cache(timing, ignore_mismatch=False)
        ranges = input_ranges(source.inputs, spec.profiles, spec.max_batch_size)
        for _ in range(options.profiles):
            profile = builder.create_optimization_profile()
            for name, (low, opt, high) in ranges.items():
                profile.set_shape(name, low, opt, high)
            config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BuildError(
                describe("TensorRT could not build the engine", fix="see the TensorRT log above")
            )
        (out_dir / ENGINE_FILE).write_bytes(bytes(plan))
        cache_bytes = bytes(config.get_timing_cache().serialize())
        (out_dir / TIMING_FILE).write_bytes(cache_bytes)
        if shared is not None:
            shared.parent.mkdir(parents=True, exist_ok=True)
            shared.write_bytes(cache_bytes)
        files = [ENGINE_FILE, TIMING_FILE]
        if table:
            _save_table(table, out_dir / CALIBRATION_FILE, spec)
            files.append(CALIBRATION_FILE)
        extra = {"options": options.to_json(), "build_seconds": round(time.perf_counter() - started, 3)}
        calibration_file = CALIBRATION_FILE if table else None
        return BuildOutput(ENGINE_FILE, tuple(files), "build", calibration_file=calibration_file, extra=extra)

    def refit(self, artifact: EngineArtifact, source: ModelSource, out_dir: Path) -> BuildOutput:
        """New weights into a copy of a refittable engine, through TensorRT's ONNX refitter."""
        import tensorrt as trt

        self._check_loadable(artifact)
        spec = BuildSpec.from_json(artifact.manifest.spec)
        if not parse_options(dict(spec.backend_options)).refit:
            raise RefitUnsupported(describe("the engine was built with refit=off", fix="rebuild it"))
        table = (
            artifact.path / artifact.manifest.calibration_file if artifact.manifest.calibration_file else None
        )
        model, _ = _precise(source, spec, None, table)
        logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(logger).deserialize_cuda_engine(artifact.engine_path.read_bytes())
        refitter = trt.Refitter(engine, logger)
        parser = trt.OnnxParserRefitter(refitter, logger)
        with tempfile.TemporaryDirectory() as work:
            path = _write_model(model, Path(work))
            if not parser.refit_from_file(str(path)) or not refitter.refit_cuda_engine():
                raise RefitUnsupported(describe("TensorRT could not refit the engine", fix="rebuild it"))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ENGINE_FILE).write_bytes(bytes(engine.serialize()))
        files = [ENGINE_FILE]
        for name in (TIMING_FILE, artifact.manifest.calibration_file):
            if name and (artifact.path / name).is_file():
                (out_dir / name).write_bytes((artifact.path / name).read_bytes())
                files.append(name)
        return BuildOutput(
            ENGINE_FILE,
            tuple(files),
            "refit",
            artifact.manifest.calibration_file,
            dict(artifact.manifest.extra),
        )

    def load(self, artifact: EngineArtifact, options: LoadOptions | None = None) -> TensorRTEngine:
        """Deserialize; ``BuildError`` for another TensorRT/GPU, ``CacheCorrupt`` for a bad plan."""
        import tensorrt as trt

        from kiln.compile.backends.tensorrt_engine import TensorRTEngine

        self._check_loadable(artifact)
        manifest = artifact.manifest
        spec = BuildSpec.from_json(manifest.spec)
        plan = artifact.engine_path.read_bytes()
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        if engine is None:
            raise CacheCorrupt(
                describe("TensorRT cannot deserialize the engine", seen=manifest.engine_file, fix="rebuild")
            )
        return TensorRTEngine(
            engine,
            inputs=manifest.inputs,
            outputs=manifest.outputs,
            profiles=spec.profiles,
            max_batch_size=spec.max_batch_size,
            num_profiles=parse_options(dict(spec.backend_options)).profiles,
            plan_bytes=len(plan),
            name=manifest.key[:12] or artifact.path.name,
        )

    def _check_loadable(self, artifact: EngineArtifact) -> None:
        if artifact.manifest.backend != self.name:
            raise BuildError(describe(f"artifact was built by backend {artifact.manifest.backend!r}"))
        check_target(Target.from_json(artifact.manifest.target), self.target())
        if not artifact.engine_path.is_file():
            raise CacheCorrupt(
                describe("engine file is missing", seen=str(artifact.engine_path), fix="rebuild")
            )


@functools.cache
def _machine_target() -> Target:
    import tensorrt as trt
    import torch

    from kiln.compile.backends.torch.target import driver_version

    props = torch.cuda.get_device_properties(0)
    return trt_target(
        version=str(trt.__version__),
        device_name=str(props.name),
        capability=(int(props.major), int(props.minor)),
        cuda=str(torch.version.cuda),
        driver=driver_version(),
    )


def _network_flags(trt: Any) -> int:
    """Strongly typed networks (TensorRT 10's flag; always on, and the flag deprecated, in 11)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if flag is not None else 0


def _write_model(model: onnx.ModelProto, folder: Path) -> Path:
    from kiln.compile.backends.onnxruntime_build import write_external

    path = folder / "model.onnx"
    write_external(model, path, "model.onnx.data")
    return path


def _parse(trt: Any, network: Any, logger: Any, model: onnx.ModelProto) -> None:
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory() as work:
        path = _write_model(model, Path(work))
        if parser.parse_from_file(str(path)):
            return
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    raise BuildError(
        describe(
            f"TensorRT's ONNX parser refused the model ({len(errors)} error(s))",
            seen="; ".join(errors[:5]),
            fix="use the onnxruntime or torch backend for this model, or re-export it with supported ops",
        )
    )


def _precise(
    source: ModelSource, spec: BuildSpec, calibration: object | None, table_path: Path | None
) -> tuple[onnx.ModelProto, Any]:
    """The model after kiln's precision pass, and the INT8 ranges used (``None`` otherwise)."""
    if source.model is None:
        raise BuildError(
            describe("the tensorrt backend builds ONNX models", seen=source.format, fix="export to ONNX")
        )
    if spec.precision == "fp32":
        return source.model, None
    from kiln.compile import precision as passes
    from kiln.compile.data import SampleSet

    if calibration is not None and not isinstance(calibration, SampleSet):
        raise BuildError(describe("calibration data must be a SampleSet", seen=type(calibration).__name__))
    table = passes.load_calibration_table(table_path) if table_path is not None else None
    result = passes.apply_precision(source.model, spec, calibration=calibration, calibration_table=table)
    return result.model, result.calibration_table


def _save_table(table: Any, path: Path, spec: BuildSpec) -> None:
    from kiln.compile import precision as passes

    method = spec.calibration.method if spec.calibration else "minmax"
    passes.save_calibration_table(table, path, method=method)
