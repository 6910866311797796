"""The backend seam: Target, the engine artifact and its manifest, and the Backend/Engine/Instance
interfaces every backend implements.

A *Backend* turns a validated model and a BuildSpec into files (an *EngineArtifact*), and loads those
files into an *Engine*: resident, owning the weights once. An Engine makes *Instances*: execution
contexts with their own buffers/stream/profile, cheap to create, one per concurrent runner. The
runtime calls ``Instance.run`` from worker threads, never from the event loop.

Heavy libraries (onnxruntime, torch, tensorrt) are imported inside the backend modules, never here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, runtime_checkable

from kiln.types import Array, ShapeProfile, Tensors, TensorSpec

if TYPE_CHECKING:
    from kiln.compile.spec import BuildSpec
    from kiln.model.source import ModelSource
    from kiln.model.validate import ModelLimits, OpSupport

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

BuildPath: TypeAlias = Literal["hit", "build", "refit", "calibration-reuse", "recalibrate"]
"""How an engine came to be: a cache hit, a full build, a weight refit, a rebuild that reused the
stored INT8 calibration ranges, or a rebuild that recalibrated after the reuse failed its check."""

Progress: TypeAlias = Callable[[str, int, int], None]
"""Progress callback: (stage description, done, total)."""


@dataclass(frozen=True, slots=True)
class Target:
    """The hardware/software an engine is bound to. An engine is never loaded on another target.

    ``arch`` is the CPU ISA level (``avx512_vnni``, ``avx2``...) or the GPU compute capability
    (``sm90``); ``details`` holds the rest (CPU model, driver, CUDA and library versions).
    """

    backend: str
    backend_version: str
    device_kind: Literal["cpu", "cuda"]
    device_name: str
    arch: str
    details: tuple[tuple[str, str], ...] = ()

    @property
    def tag(self) -> str:
        """Short human tag such as ``cpu-avx512`` or ``cuda-sm90``."""
        return f"{self.device_kind}-{self.arch}".replace("_", "")

    def cache_factors(self) -> dict[str, object]:
        data = asdict(self)
        data["details"] = [list(kv) for kv in self.details]
        return data

    def to_json(self) -> dict[str, object]:
        return self.cache_factors()

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Target:
        details = data.get("details") or []
        assert isinstance(details, list)
        return cls(
            backend=str(data["backend"]),
            backend_version=str(data["backend_version"]),
            device_kind=data["device_kind"],  # type: ignore[arg-type]
            device_name=str(data["device_name"]),
            arch=str(data["arch"]),
            details=tuple((str(k), str(v)) for k, v in details),
        )


@dataclass(frozen=True, slots=True)
class FileEntry:
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of an engine artifact: everything needed to trust and load its files.

    ``files`` maps each file's path (relative to the artifact folder) to its checksum and size;
    a mismatch on load means the entry is corrupt (``CacheCorrupt``): it is rebuilt, never served.
    ``accuracy`` is the report against the fp32 reference; ``calibration_file`` names the stored
    INT8 ranges reused on a weight-only update; ``efficiency_factor`` is filled in by ``kiln bench``.
    """

    key: str
    backend: str
    engine_file: str
    fingerprint: dict[str, object]
    spec: dict[str, object]
    target: dict[str, object]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: dict[str, FileEntry]
    build_path: BuildPath
    build_seconds: float
    created_at: float
    accuracy: dict[str, object] | None = None
    calibration_file: str | None = None
    efficiency_factor: float | None = None
    extra: dict[str, object] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    def to_json(self) -> dict[str, object]:
        return {
            "format": self.format,
            "key": self.key,
            "backend": self.backend,
            "engine_file": self.engine_file,
            "fingerprint": self.fingerprint,
            "spec": self.spec,
            "target": self.target,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "files": {k: asdict(v) for k, v in sorted(self.files.items())},
            "build_path": self.build_path,
            "build_seconds": self.build_seconds,
            "created_at": self.created_at,
            "accuracy": self.accuracy,
            "calibration_file": self.calibration_file,
            "efficiency_factor": self.efficiency_factor,
            "extra": self.extra,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Manifest:
        files = data["files"]
        assert isinstance(files, dict)
        inputs = data["inputs"]
        outputs = data["outputs"]
        assert isinstance(inputs, list)
        assert isinstance(outputs, list)
        return cls(
            key=str(data["key"]),
            backend=str(data["backend"]),
            engine_file=str(data["engine_file"]),
            fingerprint=dict(data["fingerprint"]),  # type: ignore[call-overload]
            spec=dict(data["spec"]),  # type: ignore[call-overload]
            target=dict(data["target"]),  # type: ignore[call-overload]
            inputs=tuple(TensorSpec.from_json(t) for t in inputs),
            outputs=tuple(TensorSpec.from_json(t) for t in outputs),
            files={k: FileEntry(**v) for k, v in files.items()},
            build_path=data["build_path"],  # type: ignore[arg-type]
            build_seconds=float(data["build_seconds"]),  # type: ignore[arg-type]
            created_at=float(data["created_at"]),  # type: ignore[arg-type]
            accuracy=data.get("accuracy"),  # type: ignore[arg-type]
            calibration_file=data.get("calibration_file"),  # type: ignore[arg-type]
            efficiency_factor=data.get("efficiency_factor"),  # type: ignore[arg-type]
            extra=dict(data.get("extra") or {}),  # type: ignore[call-overload]
            format=int(data.get("format", MANIFEST_FORMAT)),  # type: ignore[call-overload]
        )


@dataclass(frozen=True)
class EngineArtifact:
    """A folder holding an engine's file(s) and its ``manifest.json``.

    ``engine_bytes``: the engine file's content, when whoever opened the artifact read (and
    verified) it already; a backend's ``refit`` may use it instead of reading the file again.
    """

    path: Path
    manifest: Manifest
    engine_bytes: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def engine_path(self) -> Path:
        return self.path / self.manifest.engine_file

    @classmethod
    def read(cls, path: Path) -> EngineArtifact:
        data = json.loads((path / MANIFEST_NAME).read_text())
        return cls(path, Manifest.from_json(data))


REFIT_REPRODUCES = "refit_reproduces"
"""``BuildOutput.extra`` key of a refit: the build path that would make the same engine, if any."""


@dataclass(frozen=True)
class BuildOutput:
    """What a backend's ``build``/``refit`` wrote into its output folder.

    The caller (the engine cache) checksums ``files``, measures accuracy if asked, writes the
    manifest and moves the folder into place atomically.
    """

    engine_file: str
    files: tuple[str, ...]
    build_path: BuildPath
    calibration_file: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How a loaded engine runs: threads per run (0 = backend decides from model size) and device.

    ``allow_spinning``: let idle worker threads spin-wait for the next piece of work (``None``: the
    backend decides). Spinning buys throughput on cores the engine has to itself and costs tail
    latency when the cores are shared.

    ``num_instances``: how many instances of the engine will run at the same time; when the
    backend decides the threads, it splits the CPUs among them instead of giving each all.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 1
    device_index: int = 0
    allow_spinning: bool | None = None
    num_instances: int = 1


class Instance(Protocol):
    """One execution context of an engine. Not thread-safe: one runner thread at a time."""

    def run(self, inputs: Tensors) -> dict[str, Array]:
        """Run one batch. Inputs were checked against the engine's signature and profiles already.

        Raises ``EngineFailed`` for a transient failure (the caller discards this instance and
        retries on a new one), ``EngineDead`` for a fatal device error, ``InvalidInput`` for input
        the engine refuses.
        """

    def close(self) -> None: ...


class Engine(Protocol):
    """A loaded, resident engine. Owns the weights once; instances share them."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def profiles(self) -> tuple[ShapeProfile, ...]:
        """Allowed input shapes; empty = any shape the signature accepts."""

    @property
    def max_batch_size(self) -> int: ...

    def create_instance(self) -> Instance:
        """A new execution context. Cheap: does not copy weights."""

    def memory_bytes(self) -> int:
        """Bytes this engine holds resident (weights and arena), host or device."""

    def close(self) -> None:
        """Release the engine's memory. Instances must be closed first."""


class Backend(Protocol):
    """Builds and loads engines for one kind of hardware/runtime.

    Implementations live one per module in ``kiln.compile.backends`` and are chosen by name through
    ``kiln.compile.registry.create_backend``.
    """

    name: str

    def available(self) -> str | None:
        """``None`` when usable here, else why not (e.g. 'tensorrt is not installed')."""

    def target(self) -> Target:
        """This machine as seen by the backend."""

    def op_support(self) -> OpSupport: ...

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
        """Write the engine for ``source`` built per ``spec`` into the empty folder ``out_dir``.

        ``calibration`` is the INT8 calibration data (a ``kiln.compile.data.SampleSet``).
        ``calibration_cache``, when given, is a stored calibration table from an earlier build of the
        same structure: reuse its ranges instead of calibrating (the weight-only update path).
        Raises ``BuildError`` (or ``ModelError``) with a message naming what to fix.
        """

    def refit(self, artifact: EngineArtifact, source: ModelSource, out_dir: Path) -> BuildOutput:
        """Write a copy of ``artifact`` carrying ``source``'s weights (same structure hash) into
        ``out_dir`` without a full build. Raises ``RefitUnsupported`` when this backend cannot.
        ``extra[REFIT_REPRODUCES] == "calibration-reuse"`` in the output says that a build of
        ``source`` reusing ``artifact``'s calibration table would make the same engine (so the
        engine cache does not make it again when the refit fails its check)."""

    def load(self, artifact: EngineArtifact, options: LoadOptions | None = None) -> Engine:
        """Load a built artifact. Refuses an artifact built for another target (``BuildError``)."""


@runtime_checkable
class SupportsModelLimits(Protocol):
    """A backend that bounds the models it accepts beyond kiln's defaults (e.g. the newest ONNX IR
    version its runtime reads). Optional: callers check with ``isinstance`` and fall back to
    ``ModelLimits()``."""

    def model_limits(self) -> ModelLimits:
        """The limits model validation applies for this backend."""


@runtime_checkable
class DeclaresShapeWarmup(Protocol):
    """An engine that says whether it prepares each input shape on first use. Optional: the
    runtime reads it through :func:`prepares_per_shape`, which assumes ``True`` for engines that
    do not declare it."""

    @property
    def prepares_per_shape(self) -> bool:
        """``True`` when the first run at a new batch size does work the next runs reuse (TensorRT
        profiles tuned per shape, CUDA graphs captured per bucket, cuDNN algorithm search): such an
        engine is warmed up on, and its batches padded to, every bucket it serves. ``False`` when
        any batch size runs without preparation (ONNX Runtime on CPU): one small warm-up run loads
        the weights, and a batch runs on exactly its rows."""


def prepares_per_shape(engine: object) -> bool:
    """What ``engine`` declares (:class:`DeclaresShapeWarmup`); ``True`` when it declares nothing,
    which keeps the safe behaviour: warm up every bucket, pad to the buckets."""
    if isinstance(engine, DeclaresShapeWarmup):
        return bool(engine.prepares_per_shape)
    return True
