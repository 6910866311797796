"""Structure and weights hashes of an ONNX model. (Contract; implementation pending.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.model.source import Fingerprint

if TYPE_CHECKING:
    import onnx


def fingerprint(model: onnx.ModelProto) -> Fingerprint:
    """``structure_hash`` ignores initializer values but not names, shapes, dtypes, topology,
    attributes, opsets or IR version; ``weights_hash`` covers the values. Stable across
    re-serialization."""
    raise NotImplementedError
