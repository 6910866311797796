"""ModelSource and Fingerprint: a loaded, validated model and what identifies it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

from kiln.types import TensorSpec

if TYPE_CHECKING:
    import onnx

ModelFormat: TypeAlias = Literal["onnx", "pt2"]


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What identifies a model.

    ``structure_hash`` covers the graph with every initializer *value* removed (names, shapes,
    dtypes, topology, attributes, opsets and IR version kept); ``weights_hash`` covers the
    initializer values. A weight-only retrain keeps ``structure_hash`` and changes ``weights_hash``.
    Both are hex SHA-256 digests, stable across re-serialization of the same model.
    """

    structure_hash: str
    weights_hash: str
    opsets: tuple[tuple[str, int], ...]
    ir_version: int

    @property
    def short(self) -> str:
        """First 8 hex digits of the structure hash, for tags and tables."""
        return self.structure_hash[:8]

    def to_json(self) -> dict[str, object]:
        return {
            "structure_hash": self.structure_hash,
            "weights_hash": self.weights_hash,
            "opsets": [list(o) for o in self.opsets],
            "ir_version": self.ir_version,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Fingerprint:
        opsets = data.get("opsets") or []
        assert isinstance(opsets, list)
        return cls(
            structure_hash=str(data["structure_hash"]),
            weights_hash=str(data["weights_hash"]),
            opsets=tuple((str(d), int(v)) for d, v in opsets),
            ir_version=int(data.get("ir_version", 0)),  # type: ignore[call-overload]
        )


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model file that was loaded and validated, with its fingerprint and signature.

    ``model`` is the in-memory ONNX graph (external data already loaded) for ONNX sources and
    ``None`` for PyTorch ``.pt2`` sources. Treat it as read-only: passes work on a copy.
    ``serialized`` is the model file's bytes as read, kept when they are the whole model (no
    external data) and small enough (see ``kiln.model.load``), so that whoever needs ``model`` as
    bytes (the checker, an ONNX Runtime session) does not serialize it again; ``None`` otherwise.
    """

    path: Path
    format: ModelFormat
    fingerprint: Fingerprint
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    size_bytes: int
    model: onnx.ModelProto | None = None
    serialized: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.path.stem

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)
