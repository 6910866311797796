"""warmup_plan: the batch sizes one engine is warmed up on, from what it declares and the config."""

from __future__ import annotations

import pytest

from kiln.runtime import BatchingConfig
from kiln.runtime.warmup import WarmupPlan, warmup_plan

BATCHING = BatchingConfig(max_batch_size=16, preferred_batch_sizes=(4, 8))


def test_an_engine_that_prepares_per_shape_is_warmed_on_every_bucket() -> None:
    plan = warmup_plan(prepares_per_shape=True, batching=BATCHING)
    assert plan == WarmupPlan((1, 4, 8, 16), "per-shape")


def test_an_engine_that_runs_any_shape_is_warmed_on_batch_one() -> None:
    plan = warmup_plan(prepares_per_shape=False, batching=BATCHING)
    assert plan == WarmupPlan((1,), "any-shape")
    assert "runs any batch size" in plan.describe()


@pytest.mark.parametrize("prepares", [True, False])
def test_configured_sizes_override_the_engine(prepares: bool) -> None:
    plan = warmup_plan(prepares_per_shape=prepares, batching=BATCHING, configured=(8, 2))
    assert plan == WarmupPlan((2, 8), "configured")


def test_an_engine_without_batch_axis_runs_its_one_shape() -> None:
    plan = warmup_plan(prepares_per_shape=True, batching=BATCHING, configured=(4,), batchable=False)
    assert plan == WarmupPlan((1,), "no-batch-axis")


def test_without_preferred_sizes_per_shape_engines_warm_one_and_the_maximum() -> None:
    plan = warmup_plan(prepares_per_shape=True, batching=BatchingConfig(max_batch_size=8))
    assert plan.sizes == (1, 8)
    assert warmup_plan(prepares_per_shape=True, batching=BatchingConfig(max_batch_size=1)).sizes == (1,)
