"""The warm-up plan: on which batch sizes a new version's engine runs before it may serve.

A pure decision, made per engine (primary and fallback each get their own):

- the model config names the sizes (``VersionPolicy.warmup_batch_sizes``): those;
- the engine prepares each shape on first use (``prepares_per_shape``: TensorRT profiles, CUDA
  graphs, kernels compiled per bucket): 1, every preferred size and ``max_batch_size``, so that no
  request pays for the preparation after the swap;
- otherwise (ONNX Runtime on CPU): batch 1 alone. It pages the weights in and gives outputs to
  check; a run of every size would only take cores from the version still serving;
- an engine without a batch axis runs batch 1 (its only shape) whatever else is said.

Each warm-up run's outputs are checked (names, datatypes, shapes, rows, NaN/Inf) and the golden set
runs after it, whatever the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from kiln.runtime.batching.buckets import warmup_sizes
from kiln.runtime.config import BatchingConfig

WarmupReason: TypeAlias = Literal["configured", "per-shape", "any-shape", "no-batch-axis"]


@dataclass(frozen=True, slots=True)
class WarmupPlan:
    """The batch sizes one engine is warmed up and checked on, ascending, and why those."""

    sizes: tuple[int, ...]
    reason: WarmupReason

    def describe(self) -> str:
        why = {
            "configured": "the model's warmup_batch_sizes",
            "per-shape": "the engine prepares every shape it serves",
            "any-shape": "the engine runs any batch size unprepared",
            "no-batch-axis": "the engine has no batch axis",
        }[self.reason]
        return f"batch sizes {list(self.sizes)} ({why})"


def warmup_plan(
    *,
    prepares_per_shape: bool,
    batching: BatchingConfig,
    configured: tuple[int, ...] | None = None,
    batchable: bool = True,
) -> WarmupPlan:
    """The warm-up of one engine (see the module docstring). ``configured``: the sizes the model's
    config names, already checked against ``max_batch_size`` (``None``: decide here)."""
    if not batchable:
        return WarmupPlan((1,), "no-batch-axis")
    if configured is not None:
        return WarmupPlan(tuple(sorted(set(configured))), "configured")
    if prepares_per_shape:
        return WarmupPlan(warmup_sizes(batching.preferred_batch_sizes, batching.max_batch_size), "per-shape")
    return WarmupPlan((1,), "any-shape")
