"""The trainer's checkpoint: weights, optimizer state and the feedback offset they have learned up
to, in one file replaced atomically (temp file, fsync, ``os.replace``, fsync of the folder). After
a crash the trainer resumes from exactly that offset in exactly that state: no event is learned
twice or skipped, and the run continues as if it had not stopped."""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kiln.errors import ConfigError, describe
from kiln.types import Array

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class Checkpoint:
    """Fields: offset (the last feedback offset learned), num_samples (trained so far),
    num_exports (exports so far), weights (ONNX initializer name → array), optimizers (their
    ``state_dict()``s, in the trainer's order)."""

    offset: int
    num_samples: int
    num_exports: int
    weights: dict[str, Array] = field(repr=False)
    optimizers: list[dict[str, Any]] = field(default_factory=list, repr=False)


def save_checkpoint(folder: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` into ``folder`` atomically; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(
        {
            "offset": checkpoint.offset,
            "num_samples": checkpoint.num_samples,
            "num_exports": checkpoint.num_exports,
            "weights": {k: torch.from_numpy(v) for k, v in checkpoint.weights.items()},
            "optimizers": checkpoint.optimizers,
        },
        buffer,
    )
    target = folder / CHECKPOINT_FILE
    temp = folder / f".{CHECKPOINT_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(temp, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return target


def load_checkpoint(folder: Path) -> Checkpoint | None:
    """The checkpoint in ``folder``, or None when there is none."""
    path = folder / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        data = torch.load(path, weights_only=True)
        return Checkpoint(
            offset=int(data["offset"]),
            num_samples=int(data["num_samples"]),
            num_exports=int(data["num_exports"]),
            weights={k: v.numpy() for k, v in data["weights"].items()},
            optimizers=list(data["optimizers"]),
        )
    except (OSError, RuntimeError, KeyError, TypeError) as exc:
        raise ConfigError(
            describe(
                "the trainer checkpoint is unreadable", seen=f"{path}: {exc}", fix="remove it to start over"
            )
        ) from None
