"""Engines for in-process benchmarks: an ONNX model built through kiln's engine cache with the
ONNX Runtime backend, or an engine artifact folder (``manifest.json`` inside) loaded as it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.cache import BuildReport, EngineStore, obtain_engine
from kiln.compile.backends.base import Engine, EngineArtifact, LoadOptions
from kiln.compile.data import SampleSet
from kiln.compile.registry import create_backend
from kiln.compile.spec import BuildSpec
from kiln.errors import ConfigError, describe
from kiln.model.load import load_model

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BenchEngine:
    """A loaded engine and how it was obtained (``report`` is ``None`` for an artifact folder)."""

    engine: Engine
    artifact: EngineArtifact
    report: BuildReport | None


def obtain_bench_engine(
    path: Path,
    *,
    spec: BuildSpec | None = None,
    cache_dir: Path | None = None,
    intra_op_threads: int = 0,
    calibration: SampleSet | None = None,
    num_instances: int = 1,
) -> BenchEngine:
    """The engine for ``path``: an ONNX model file is built per ``spec`` through the engine cache
    (a hit when it was built before; ``calibration`` samples for int8); a folder holding
    ``manifest.json`` is loaded directly. ``ConfigError`` when ``path`` is neither.
    ``num_instances``: how many instances will run at once (automatic threads are split among them)."""
    path = Path(path)
    backend = create_backend("onnxruntime")
    options = LoadOptions(intra_op_threads=intra_op_threads, num_instances=num_instances)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise ConfigError(
                describe(
                    f"{path} is a folder without {MANIFEST}",
                    fix="give an ONNX model file or an engine artifact folder",
                )
            )
        artifact = EngineArtifact.read(path)
        return BenchEngine(backend.load(artifact, options), artifact, None)
    if not path.is_file():
        raise ConfigError(
            describe(
                "engine path does not exist", seen=str(path), fix="give an .onnx file or an artifact folder"
            )
        )
    source = load_model(path, op_support=backend.op_support())
    report = obtain_engine(
        source, spec or BuildSpec(), backend, EngineStore(cache_dir), calibration=calibration
    )
    return BenchEngine(backend.load(report.artifact, options), report.artifact, report)
