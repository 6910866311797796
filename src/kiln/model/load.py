"""Loading a model file into a validated ModelSource. (Contract; implementation pending.)"""

from __future__ import annotations

from pathlib import Path

from kiln.model.source import ModelSource
from kiln.model.validate import ModelLimits, OpSupport


def load_model(
    path: Path, *, limits: ModelLimits | None = None, op_support: OpSupport | None = None
) -> ModelSource:
    """Load, validate and fingerprint the model at ``path`` (``.onnx``; ``.pt2`` for the torch backend).

    Raises ``ModelError`` listing every problem found (not a file, not ONNX, truncated, checker
    failures, unsupported ops, external data escaping the model's folder, absurd dims...).
    """
    raise NotImplementedError
