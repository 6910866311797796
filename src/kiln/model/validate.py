"""Model validation: collect every problem, then raise one ModelError. (Implementation pending.)"""

from __future__ import annotations

from typing import Protocol


class OpSupport(Protocol):
    """Which operators a backend can run; used by model validation."""

    def unsupported(self, domain: str, op_type: str, opset: int) -> str | None:
        """``None`` when the backend runs this op, else a one-line reason naming the fix."""


from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """Bounds a model must stay within to be accepted."""

    max_file_bytes: int = 4 * 1024**3
    max_dim_elements: int = 1 << 31
    min_opset: int = 11
    max_opset: int = 23
