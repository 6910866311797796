"""The ONNX Runtime backend: kiln's embedded default engine, on the CPU.

``build`` applies the precision pass (fp32 as is; fp16/int8 through ``kiln.compile.precision``),
stores the INT8 calibration table, then saves ONNX Runtime's fully optimized graph for this CPU as
the engine file, and records the refit map (``onnxruntime_refit``). ``refit`` writes new weights
into a copy of that engine through the map. ``load`` opens the engine file with optimization off,
a thread count chosen from the model's work, and spinning off. See ``docs/backends.md``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.compile.backends.base import (
    REFIT_REPRODUCES,
    BuildOutput,
    EngineArtifact,
    LoadOptions,
    Manifest,
    Progress,
    Target,
)
from kiln.compile.backends.cpu import usable_cpus
from kiln.compile.backends.graph_cost import estimate_cost
from kiln.compile.backends.onnxruntime_build import (
    ENGINE_DATA_FILE,
    ENGINE_FILE,
    INLINE_LIMIT_BYTES,
    OptimizedEngine,
    write_optimized,
)
from kiln.compile.backends.onnxruntime_engine import OrtEngine
from kiln.compile.backends.onnxruntime_ops import OrtOpSupport, cpu_op_support, max_ir_version
from kiln.compile.backends.onnxruntime_options import parse_options
from kiln.compile.backends.onnxruntime_refit import RefitPlan, apply_refit, plan_refit
from kiln.compile.backends.onnxruntime_refit_map import INDEX_FILE
from kiln.compile.backends.onnxruntime_session import ThreadPlan, batch_hint, plan_threads, serving_options
from kiln.compile.backends.onnxruntime_target import BACKEND_NAME, check_target, machine_target
from kiln.compile.data import SampleSet
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, CacheCorrupt, RefitUnsupported, describe
from kiln.model.validate import ModelLimits

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from kiln.compile.precision import CalibrationTable, PrecisionPath
    from kiln.model.source import ModelSource

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class _Precise:
    model: onnx.ModelProto
    table: CalibrationTable | None
    path: PrecisionPath
    reused_table: bool
    seconds: float


class OnnxRuntimeBackend:
    """Builds and loads ONNX Runtime CPU engines.

    ``inline_limit_bytes``: weights past this size are written as external data (see
    ``kiln.compile.backends.onnxruntime_build``); lower it only to exercise that path in tests.
    """

    name = BACKEND_NAME

    def __init__(self, *, inline_limit_bytes: int = INLINE_LIMIT_BYTES) -> None:
        self._inline_limit_bytes = inline_limit_bytes

    def available(self) -> str | None:
        """``None`` when onnxruntime imports and has its CPU provider, else why not."""
        try:
            import onnxruntime
        except ImportError as exc:
            return f"onnxruntime is not importable ({exc}); install it with `pip install onnxruntime`"
        if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
            return "this onnxruntime build has no CPUExecutionProvider; install the `onnxruntime` package"
        return None

    def target(self) -> Target:
        """This CPU (model, ISA level, kernel flags; not the core count) and the onnxruntime build."""
        return machine_target()

    def op_support(self) -> OrtOpSupport:
        """Answers from ONNX Runtime's CPU kernel registry."""
        return cpu_op_support()

    def model_limits(self) -> ModelLimits:
        """The default limits, plus the newest IR version this ONNX Runtime reads."""
        return ModelLimits(max_ir_version=max_ir_version())

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
        """Write ``engine.onnx`` (plus ``engine.onnx.data`` for weights past the inline limit and
        ``calibration.json`` for int8) into ``out_dir``. On failure, removes what it wrote.
        ``BuildError`` for unknown backend options (``kiln.compile.backends.onnxruntime_options``)."""
        model = _onnx_model(source)
        fusions = parse_options(dict(spec.backend_options)).disabled_fusions
        if calibration is not None and not isinstance(calibration, SampleSet):
            raise BuildError(
                describe("calibration data must be a SampleSet", seen=type(calibration).__name__)
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        _refuse_existing(out_dir)
        try:
            with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as work:
                precise = _apply_precision(
                    model,
                    spec,
                    calibration=calibration,
                    calibration_cache=calibration_cache,
                    progress=progress,
                    workdir=Path(work),
                )
                calibration_file = _save_table(precise.table, out_dir, spec)
                engine = self._optimize(
                    precise.model, out_dir, Path(work), progress, disabled_fusions=fusions
                )
                refit = self._plan_refit(
                    model, precise.model, out_dir, Path(work), progress, disabled_fusions=fusions
                )
        except BaseException:
            for name in (ENGINE_FILE, ENGINE_DATA_FILE, CALIBRATION_FILE, INDEX_FILE):
                (out_dir / name).unlink(missing_ok=True)
            raise
        return BuildOutput(
            engine_file=ENGINE_FILE,
            files=engine.files + ((calibration_file,) if calibration_file else ()) + refit.files,
            build_path="calibration-reuse" if precise.reused_table else "build",
            calibration_file=calibration_file,
            extra={**self._build_facts(model, spec, precise, engine), "refit": refit.record},
        )

    def _plan_refit(
        self,
        model: onnx.ModelProto,
        precise: onnx.ModelProto,
        out_dir: Path,
        workdir: Path,
        progress: Progress | None,
        *,
        disabled_fusions: tuple[str, ...],
    ) -> RefitPlan:
        stage = "mapping the engine's weights for refits"
        _report(progress, stage, 0)
        started = time.perf_counter()
        plan = plan_refit(model, precise, out_dir, workdir, disabled_fusions=disabled_fusions)
        plan.record["map_seconds"] = round(time.perf_counter() - started, 4)
        _report(progress, stage, 1)
        return plan

    def _optimize(
        self,
        model: onnx.ModelProto,
        out_dir: Path,
        workdir: Path,
        progress: Progress | None,
        *,
        disabled_fusions: tuple[str, ...],
    ) -> OptimizedEngine:
        stage = f"optimizing for {self.target().tag}"
        _report(progress, stage, 0)
        engine = write_optimized(
            model,
            out_dir,
            workdir,
            inline_limit_bytes=self._inline_limit_bytes,
            disabled_fusions=disabled_fusions,
        )
        _report(progress, stage, 1)
        return engine

    def _build_facts(
        self, model: onnx.ModelProto, spec: BuildSpec, precise: _Precise, engine: OptimizedEngine
    ) -> dict[str, object]:
        """What the manifest's ``extra`` records; the work estimate drives the thread policy."""
        cost = estimate_cost(model, spec.profiles)
        fusions = parse_options(dict(spec.backend_options)).disabled_fusions
        return {
            "optimization_level": "all",
            **({"disabled_fusions": list(fusions)} if fusions else {}),
            "isa": self.target().arch,
            "external_data": engine.external_data,
            "precision_path": precise.path,
            "precision_seconds": round(precise.seconds, 4),
            "optimize_seconds": round(engine.seconds, 4),
            **(cost.to_json() if cost else {}),
        }

    def refit(self, artifact: EngineArtifact, source: ModelSource, out_dir: Path) -> BuildOutput:
        """The stored engine graph with ``source``'s weights, through the refit map recorded at
        build time (no optimization pass). ``RefitUnsupported`` naming why when the structure
        changed, the engine was not mappable, or the map does not fit; nothing is left behind."""
        manifest = artifact.manifest
        stored = manifest.fingerprint.get("structure_hash")
        if stored != source.fingerprint.structure_hash:
            raise RefitUnsupported(
                describe(
                    "the model's structure differs from the engine's",
                    seen=f"{source.fingerprint.structure_hash[:12]} vs {str(stored)[:12]}",
                    fix="the engine is rebuilt instead (nothing to do)",
                )
            )
        record = manifest.extra.get("refit")
        if not isinstance(record, dict):
            raise RefitUnsupported(
                describe("the engine has no refit map (built before kiln recorded one)", fix="rebuild it")
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        _refuse_existing(out_dir)
        started = time.perf_counter()
        carried = tuple(n for n in (CALIBRATION_FILE, INDEX_FILE) if n in manifest.files)
        result = apply_refit(
            record, artifact.path, carried, _onnx_model(source), out_dir, engine_bytes=artifact.engine_bytes
        )
        extra = {
            **manifest.extra,
            "refit": record,
            "refit_clipped_values": result.clipped,
            "refit_replaced_initializers": result.replaced,
            "refit_seconds": round(time.perf_counter() - started, 4),
            REFIT_REPRODUCES: _reproduces(record, manifest),
        }
        return BuildOutput(
            engine_file=ENGINE_FILE,
            files=result.files,
            build_path="refit",
            calibration_file=manifest.calibration_file,
            extra=extra,
        )

    def load(self, artifact: EngineArtifact, options: LoadOptions | None = None) -> OrtEngine:
        """Open the engine. ``BuildError`` for another target or backend, ``CacheCorrupt`` for a
        missing or unreadable engine file."""
        options = options or LoadOptions()
        manifest = artifact.manifest
        self._check_loadable(artifact)
        spec = BuildSpec.from_json(manifest.spec)
        data_file = artifact.path / ENGINE_DATA_FILE
        engine_bytes = artifact.engine_path.stat().st_size
        engine_bytes += data_file.stat().st_size if data_file.is_file() else 0
        macs = _int_or_none(manifest.extra.get("macs_per_sample"))
        plan = plan_threads(
            options,
            macs_per_call=macs * batch_hint(spec) if macs is not None else None,
            engine_bytes=engine_bytes,
            cpus=usable_cpus(),
        )
        return OrtEngine(
            _open_session(artifact.engine_path, plan),
            profiles=spec.profiles,
            max_batch_size=spec.max_batch_size,
            thread_plan=plan,
            engine_bytes=engine_bytes,
            activation_bytes_per_sample=_int_or_none(manifest.extra.get("activation_bytes_per_sample")),
            name=manifest.key[:12] or artifact.path.name,
        )

    def _check_loadable(self, artifact: EngineArtifact) -> None:
        manifest = artifact.manifest
        if manifest.backend != self.name:
            raise BuildError(
                describe(
                    f"artifact was built by backend {manifest.backend!r}", fix="load it with that backend"
                )
            )
        check_target(Target.from_json(manifest.target), self.target())
        if not artifact.engine_path.is_file():
            raise CacheCorrupt(
                describe("engine file is missing", seen=str(artifact.engine_path), fix="rebuild it")
            )


def _reproduces(record: dict[str, object], manifest: Manifest) -> str | None:
    """``calibration-reuse`` when the refit recomputed every int8 scale (``onnxruntime_refit_scales``):
    a rebuild with the stored calibration table would make the same engine."""
    scales = record.get("scales")
    if manifest.calibration_file is None or not isinstance(scales, dict) or scales.get("kept") != {}:
        return None
    return "calibration-reuse"


def _open_session(path: Path, plan: ThreadPlan) -> onnxruntime.InferenceSession:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), serving_options(plan), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CacheCorrupt(
            describe(
                "ONNX Runtime cannot load the engine file",
                seen=f"{path.name}: {type(exc).__name__}",
                fix="remove the cache entry so that it is rebuilt",
            )
        ) from exc


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _onnx_model(source: ModelSource) -> onnx.ModelProto:
    if source.model is None:
        raise BuildError(
            describe(
                f"the onnxruntime backend needs an ONNX model, got a {source.format} model",
                seen=str(source.path),
                fix="export the model to ONNX, or build it with the torch backend",
            )
        )
    return source.model


def _refuse_existing(out_dir: Path) -> None:
    present = [
        n for n in (ENGINE_FILE, ENGINE_DATA_FILE, CALIBRATION_FILE, INDEX_FILE) if (out_dir / n).exists()
    ]
    if present:
        raise BuildError(
            describe(
                "build output folder already holds engine files",
                seen=present,
                fix="build into an empty folder",
            )
        )


def _apply_precision(
    model: onnx.ModelProto,
    spec: BuildSpec,
    *,
    calibration: SampleSet | None,
    calibration_cache: Path | None,
    progress: Progress | None,
    workdir: Path,
) -> _Precise:
    if spec.precision == "fp32":
        return _Precise(model, None, "none", False, 0.0)
    from kiln.compile import precision as passes

    table = None
    if calibration_cache is not None and spec.precision == "int8":
        table = passes.load_calibration_table(calibration_cache)
    try:
        result = passes.apply_precision(
            model, spec, calibration=calibration, calibration_table=table, progress=progress, workdir=workdir
        )
    except NotImplementedError as exc:
        raise BuildError(
            describe(f"precision {spec.precision!r} is not available in this kiln", fix="build fp32")
        ) from exc
    reused = table is not None or result.path == "calibration-reuse"
    return _Precise(result.model, result.calibration_table, result.path, reused, result.seconds)


def _save_table(table: CalibrationTable | None, out_dir: Path, spec: BuildSpec) -> str | None:
    if not table:
        return None
    from kiln.compile import precision as passes

    method = spec.calibration.method if spec.calibration else "minmax"
    passes.save_calibration_table(table, out_dir / CALIBRATION_FILE, method=method)
    return CALIBRATION_FILE


def _report(progress: Progress | None, stage: str, done: int) -> None:
    if progress is not None:
        progress(stage, done, 1)
