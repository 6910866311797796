"""What the runtime's facade gives back: inference results and status reports."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.runtime.lifecycle import VersionStatus
from kiln.types import Array, TensorSpec


@dataclass(frozen=True, slots=True)
class InferResult:
    """The outputs of one request and how it was served.

    ``version`` is the version the request was pinned to when admitted (it always finishes there);
    ``route`` is ``primary`` or ``fallback``. Times are in nanoseconds: ``queue_ns`` from admission
    to the start of its batch, ``compute_*_ns`` for joining the batch, running the engine and
    splitting the outputs (shared by every request of the batch). ``batch_rows`` is the padded
    size of the batch it ran in; ``retries`` the runs of that batch that failed before it succeeded.
    """

    outputs: dict[str, Array]
    model: str
    version: str
    route: str
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int
    batch_rows: int
    retries: int

    @property
    def compute_ns(self) -> int:
        return self.compute_input_ns + self.compute_infer_ns + self.compute_output_ns


@dataclass(frozen=True)
class ModelStatus:
    """One model at one moment.

    ``ready``: an active version can serve (its primary is not dead, or it has a fallback).
    ``live``: no resident version's primary engine is dead. ``versions`` lists recent loads, oldest
    first, with FAILED ones and their reasons. ``inputs``/``outputs``/``max_batch_size`` describe
    the active version (empty when there is none).
    """

    name: str
    ready: bool
    live: bool
    active_version: str | None
    versions: tuple[VersionStatus, ...]
    queue_size: int
    running_batches: int
    memory_bytes: int
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    max_batch_size: int = 0


@dataclass(frozen=True)
class RuntimeStatus:
    """Every model, plus the runtime's own liveness and readiness."""

    live: bool
    ready: bool
    models: tuple[ModelStatus, ...]
