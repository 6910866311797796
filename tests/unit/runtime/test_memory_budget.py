"""The per-model memory budget: a pure check, and ModelSlot refusing a version that breaks it."""

from __future__ import annotations

import asyncio

import pytest
from runtime_fakes import FakeEngine

from kiln.errors import ConfigError
from kiln.runtime import BatchingConfig, FallbackConfig, ModelConfig, ModelSlot, VersionPolicy, VersionState
from kiln.runtime.memory import budget_problem

MiB = 1 << 20


def test_no_budget_or_within_budget_is_fine() -> None:
    common = {"model": "m", "version": "2", "stage": "for its engines"}
    assert budget_problem(**common, new_bytes=10, resident_bytes=10, budget_bytes=None) is None
    assert budget_problem(**common, new_bytes=10, resident_bytes=10, budget_bytes=20) is None


def test_over_budget_names_sizes_budget_and_fix() -> None:
    problem = budget_problem(
        model="ctr",
        version="2",
        stage="for its engines",
        new_bytes=3 * MiB,
        resident_bytes=2 * MiB,
        budget_bytes=4 * MiB,
    )
    assert problem is not None
    assert "version 2 of 'ctr'" in problem
    assert str(3 * MiB) in problem
    assert str(2 * MiB) in problem
    assert f"max_memory_bytes={4 * MiB}" in problem
    assert "raise max_memory_bytes" in problem


def test_budget_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_memory_bytes"):
        ModelConfig(max_memory_bytes=0)


def _config(budget: int) -> ModelConfig:
    return ModelConfig(
        batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=0),
        fallback=FallbackConfig(probe_in_background=False),
        versions=VersionPolicy(max_loaded_versions=1),
        max_memory_bytes=budget,
    )


def test_a_version_that_would_exceed_the_budget_fails_and_the_active_one_keeps_serving() -> None:
    async def main() -> None:
        slot = ModelSlot("m", _config(12 * MiB))
        first = await slot.load_version("1", lambda: FakeEngine(1.0, weights_bytes=8 * MiB)).wait(10)
        assert first.state is VersionState.READY
        second = await slot.load_version("2", lambda: FakeEngine(2.0, weights_bytes=8 * MiB)).wait(10)
        assert second.state is VersionState.FAILED
        assert second.reason is not None
        assert "memory budget exceeded" in second.reason
        assert "other resident versions" in second.reason
        assert slot.status().active_version == "1"
        assert slot.status().memory_bytes == 8 * MiB
        await slot.aclose()

    asyncio.run(main())


def test_a_budget_for_two_versions_allows_the_hot_swap() -> None:
    async def main() -> None:
        slot = ModelSlot("m", _config(16 * MiB))
        await slot.load_version("1", lambda: FakeEngine(1.0, weights_bytes=8 * MiB)).wait(10)
        second = await slot.load_version("2", lambda: FakeEngine(2.0, weights_bytes=8 * MiB)).wait(10)
        assert second.state is VersionState.READY
        assert slot.status().active_version == "2"
        await slot.aclose()

    asyncio.run(main())
