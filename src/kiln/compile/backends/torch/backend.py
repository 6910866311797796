"""The torch backend: PyTorch Inductor engines on CUDA (or the CPU), refitted without recompiling.

``build`` converts the source (ONNX through ``onnx_module``, or a ``.pt2`` ExportedProgram) into a
module in the spec's precision and layout, compiles it with ``torch.compile`` once per batch
bucket, and writes the graph, the weights and PyTorch's compile artifacts (see ``prepare``).
``load`` checks the target, hot-loads the compile artifacts (so compiling hits the cache), rebuilds
the module, copies the weights in and compiles every bucket before returning; or, when a closed
engine of the same key waits in the standby pool, copies the new weights into it and returns at
once. ``refit`` writes a new artifact with another version's weights (same structure) and the base's
compile cache. See ``docs/backends.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.compile.backends.base import BuildOutput, EngineArtifact, LoadOptions, Progress, Target
from kiln.compile.backends.torch.onnx_ops import TorchOpSupport
from kiln.compile.backends.torch.target import BACKEND_NAME, check_target, machine_target
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, CacheCorrupt, describe

if TYPE_CHECKING:
    from kiln.compile.backends.torch.engine import TorchEngine
    from kiln.compile.backends.torch.resident import StandbyPool
    from kiln.model.source import ModelSource

log = logging.getLogger(__name__)


class TorchBackend:
    """Builds and loads torch engines (see the module docstring).

    ``device``: ``auto`` (the first CUDA GPU when there is one, else the CPU), ``cuda``, ``cuda:N``
    or ``cpu``. ``max_standby_per_key``: closed engines kept per engine key for weight refits
    (0 frees every closed engine).
    """

    name = BACKEND_NAME

    def __init__(self, *, device: str = "auto", max_standby_per_key: int = 1) -> None:
        self._device_choice = device
        self._max_standby = max_standby_per_key
        self._pool: StandbyPool | None = None

    # -- what and where -----------------------------------------------------------------------

    def available(self) -> str | None:
        """``None`` when torch imports (and, for a CUDA device, sees a GPU), else why not."""
        try:
            import torch
        except ImportError as exc:
            return f"torch is not importable ({exc}); install kiln with the `torch` extra"
        if self._device_choice.startswith("cuda") and not torch.cuda.is_available():
            return "torch sees no CUDA GPU (torch.cuda.is_available() is False); use device='cpu'"
        return None

    def device(self, options: LoadOptions | None = None) -> str:
        import torch

        choice = self._device_choice
        if choice == "auto":
            choice = "cuda" if torch.cuda.is_available() else "cpu"
        if choice == "cuda":
            choice = f"cuda:{(options or LoadOptions()).device_index}"
        return choice

    def target(self) -> Target:
        """This GPU (name, compute capability, driver, CUDA, torch, cuDNN, Triton) or CPU."""
        return machine_target(self.device())

    def op_support(self) -> TorchOpSupport:
        """The ONNX operators the converter handles (``onnx_ops``)."""
        return TorchOpSupport()

    @property
    def standby(self) -> StandbyPool:
        """Closed engines kept for weight refits (``held_bytes()``, ``clear()``)."""
        if self._pool is None:
            from kiln.compile.backends.torch.resident import StandbyPool

            self._pool = StandbyPool(self._max_standby)
        return self._pool

    # -- build and refit ------------------------------------------------------------------------

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
        """Write the engine files for ``source`` into the empty ``out_dir`` (see the module docstring).
        ``BuildError`` for int8, unsupported ONNX nodes, bad options or a failed compile; nothing is
        left in ``out_dir`` on failure."""
        from kiln.compile.backends.torch.build import build_engine, resident_key
        from kiln.compile.backends.torch.resident import Resident, device_weight_bytes

        out_dir.mkdir(parents=True, exist_ok=True)
        _refuse_existing(out_dir)
        device = self.device()
        try:
            built = build_engine(source, spec, out_dir, device=device, progress=progress)
        except BaseException:
            _remove_engine_files(out_dir)
            raise
        if self._max_standby:
            import torch

            key = resident_key(source.fingerprint.structure_hash, spec, self.target())
            weights = device_weight_bytes(built.module)
            self.standby.put(Resident(key, built.module, built.forward, torch.device(device), weights))
        return built.output

    def refit(self, artifact: EngineArtifact, source: ModelSource, out_dir: Path) -> BuildOutput:
        """A copy of ``artifact`` with ``source``'s weights, without compiling: the base's graph and
        compile cache, new ``weights.pt``. ``RefitUnsupported`` when the structure differs."""
        from kiln.compile.backends.torch.build import refit_engine

        self._check_loadable(artifact)
        out_dir.mkdir(parents=True, exist_ok=True)
        _refuse_existing(out_dir)
        try:
            return refit_engine(artifact, source, out_dir)
        except BaseException:
            _remove_engine_files(out_dir)
            raise

    # -- load -----------------------------------------------------------------------------------

    def load(self, artifact: EngineArtifact, options: LoadOptions | None = None) -> TorchEngine:
        """The engine, every bucket compiled (or refitted into a standby engine). ``BuildError``
        for another backend or target, ``CacheCorrupt`` for missing or unreadable files,
        ``EngineDead`` when this process's device is poisoned."""
        from kiln.compile.backends.torch.device_health import check_alive
        from kiln.compile.backends.torch.loading import load_engine

        check_alive("loading a torch engine")
        self._check_loadable(artifact)
        return load_engine(
            artifact, device=self.device(options), pool=self.standby if self._max_standby else None
        )

    def prepare_standby(
        self, artifact: EngineArtifact, options: LoadOptions | None = None, *, num_instances: int = 1
    ) -> None:
        """Load ``artifact`` with ``num_instances`` instances and park it in the standby pool, so
        that the next weight update of this key is a copy. Costs the memory of one more engine."""
        engine = self.load(artifact, options)
        instances = [engine.create_instance() for _ in range(num_instances)]
        for instance in instances:
            instance.close()
        engine.close()

    def _check_loadable(self, artifact: EngineArtifact) -> None:
        manifest = artifact.manifest
        if manifest.backend != self.name:
            raise BuildError(
                describe(
                    f"artifact was built by backend {manifest.backend!r}", fix="load it with that backend"
                )
            )
        check_target(Target.from_json(manifest.target), self.target())
        missing = [f for f in manifest.files if not (artifact.path / f).is_file()]
        if missing or not artifact.engine_path.is_file():
            raise CacheCorrupt(
                describe("engine files are missing", seen=missing or [manifest.engine_file], fix="rebuild")
            )


def _refuse_existing(out_dir: Path) -> None:
    from kiln.compile.backends.torch.prepare import ENGINE_FILES

    present = [n for n in ENGINE_FILES if (out_dir / n).exists()]
    if present:
        raise BuildError(
            describe(
                "build output folder already holds engine files",
                seen=present,
                fix="build into an empty folder",
            )
        )


def _remove_engine_files(out_dir: Path) -> None:
    from kiln.compile.backends.torch.prepare import ENGINE_FILES

    for name in ENGINE_FILES:
        (out_dir / name).unlink(missing_ok=True)
