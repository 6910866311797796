"""A hand-written fake of the Backend interface for the cache's unit tests, plus small helpers.

The fake writes a tiny engine file (and, for int8, a calibration table), counts its builds and
refits (also across processes, through an append-only log file), and can be told to fail.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kiln._clock import FakeClock
from kiln.cache.entry import CacheEntry
from kiln.compile.backends.base import (
    MANIFEST_NAME,
    REFIT_REPRODUCES,
    BuildOutput,
    EngineArtifact,
    FileEntry,
    Manifest,
    Progress,
    Target,
)
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, RefitUnsupported
from kiln.model.source import Fingerprint, ModelSource
from kiln.types import TensorSpec

TARGET = Target("fake", "1.0", "cpu", "Fake CPU", "avx2", (("isa", "avx2,fma"),))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_source(weights: str = "w1", structure: str = "net", name: str = "ctr") -> ModelSource:
    fingerprint = Fingerprint(digest(structure), digest(weights), (("", 17),), 9)
    return ModelSource(
        path=Path("models") / f"{name}.onnx",
        format="onnx",
        fingerprint=fingerprint,
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("y", "FP32", (-1, 1)),),
        size_bytes=100,
    )


@dataclass
class FakeBackend:
    """Implements the Backend build/refit/target contract with a few bytes of files."""

    name: str = "fake"
    target_: Target = TARGET
    can_refit: bool = True
    refit_reproduces: bool = False  # says a calibration-reuse rebuild would make the refitted engine
    fail_build: bool = False
    log_path: Path | None = None
    clock: FakeClock | None = None
    build_cost_s: float = 0.0
    before_build: Callable[[], None] | None = None
    calls: list[tuple[str, Path | None]] = field(default_factory=list)

    @property
    def num_builds(self) -> int:
        return sum(1 for kind, _ in self.calls if kind == "build")

    @property
    def num_refits(self) -> int:
        return sum(1 for kind, _ in self.calls if kind == "refit")

    def target(self) -> Target:
        return self.target_

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
        self._record("build", calibration_cache)
        if self.before_build is not None:
            self.before_build()
        assert not any(out_dir.iterdir()), "build must get an empty folder"
        (out_dir / "partial.bin").write_bytes(b"half an engine")
        if self.fail_build:
            raise BuildError("fake build failed on purpose")
        (out_dir / "partial.bin").unlink()
        if progress is not None:
            progress("fake build", 1, 1)
        (out_dir / "engine.bin").write_text(f"engine {source.fingerprint.weights_hash}")
        if self.clock is not None:
            self.clock.advance(self.build_cost_s)
        if spec.precision != "int8":
            return BuildOutput("engine.bin", ("engine.bin",), "build")
        table = (
            calibration_cache.read_text() if calibration_cache else f"ranges of {source.fingerprint.short}"
        )
        (out_dir / "calibration.json").write_text(table)
        reused = {"calibration_reused": calibration_cache is not None}
        return BuildOutput(
            "engine.bin", ("engine.bin", "calibration.json"), "build", "calibration.json", reused
        )

    def refit(self, artifact: EngineArtifact, source: ModelSource, out_dir: Path) -> BuildOutput:
        self._record("refit", None)
        if not self.can_refit:
            raise RefitUnsupported("the fake backend was told it cannot refit")
        for path in artifact.path.iterdir():
            if path.name != MANIFEST_NAME:
                shutil.copy2(path, out_dir / path.name)
        (out_dir / "engine.bin").write_text(f"refitted {source.fingerprint.weights_hash}")
        m = artifact.manifest
        extra: dict[str, object] = {REFIT_REPRODUCES: "calibration-reuse"} if self.refit_reproduces else {}
        return BuildOutput(m.engine_file, tuple(m.files), "refit", m.calibration_file, extra)

    def _record(self, kind: str, calibration_cache: Path | None) -> None:
        self.calls.append((kind, calibration_cache))
        if self.log_path is not None:
            with self.log_path.open("a") as log:
                log.write(f"{kind}\n")


def temp_leftovers(root: Path) -> list[str]:
    """Names left in the store's temporary folder (none after any finished operation)."""
    temp = root / ".tmp"
    return sorted(p.name for p in temp.iterdir()) if temp.is_dir() else []


def flip_byte(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def make_manifest(key: str, weights_hash: str, *, model: str = "ctr", target: Target = TARGET) -> Manifest:
    """A minimal manifest, as an entry for (key, weights_hash) would carry."""
    source = make_source()
    fingerprint = {**source.fingerprint.to_json(), "weights_hash": weights_hash}
    return Manifest(
        key=key,
        backend="fake",
        engine_file="engine.bin",
        fingerprint=fingerprint,
        spec=BuildSpec().to_json(),
        target=target.to_json(),
        inputs=source.inputs,
        outputs=source.outputs,
        files={"engine.bin": FileEntry(digest("engine"), 6)},
        build_path="build",
        build_seconds=1.5,
        created_at=0.0,
        extra={"model_name": model},
    )


def make_entry(
    key: str, weights: str, *, last_used: float = 0.0, size_bytes: int = 100, readable: bool = True
) -> CacheEntry:
    """An in-memory entry (as the store would list it) for the pure planning functions."""
    weights_hash = digest(weights)
    manifest = make_manifest(key, weights_hash) if readable else None
    path = Path("cache") / key / weights_hash[:16]
    problem = None if readable else "manifest.json is not JSON"
    return CacheEntry(key, weights_hash[:16], path, size_bytes, last_used, manifest, problem)
