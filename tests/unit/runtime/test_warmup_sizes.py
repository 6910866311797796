"""VersionPolicy.warmup_batch_sizes: which batch sizes a new version is warmed up and checked on."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from runtime_fakes import FakeEngine

from kiln.errors import ConfigError
from kiln.runtime import BatchingConfig, FallbackConfig, ModelConfig, ModelSlot, VersionPolicy, VersionState
from kiln.types import Array, Tensors


def _config(warmup: tuple[int, ...] | None) -> ModelConfig:
    return ModelConfig(
        num_instances=2,
        batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=0, preferred_batch_sizes=(4,)),
        fallback=FallbackConfig(probe_in_background=False),
        versions=VersionPolicy(warmup_batch_sizes=warmup),
    )


def _rows_seen(warmup: tuple[int, ...] | None) -> list[int]:
    seen: list[int] = []
    lock = threading.Lock()

    def output(inputs: Tensors) -> dict[str, Array]:
        with lock:
            seen.append(len(inputs["x"]))
        return {"y": np.asarray(inputs["x"], np.float32)}

    async def main() -> VersionState:
        slot = ModelSlot("m", _config(warmup))
        status = await slot.load_version("1", FakeEngine(output_fn=output)).wait(timeout_s=10)
        await slot.aclose()
        return status.state

    assert asyncio.run(main()) is VersionState.READY
    return sorted(seen)


def test_by_default_every_batch_size_is_warmed_on_every_instance() -> None:
    assert _rows_seen(None) == [1, 1, 4, 4, 8, 8]


def test_a_policy_can_warm_up_on_fewer_sizes() -> None:
    assert _rows_seen((1,)) == [1, 1]
    assert _rows_seen((4, 1)) == [1, 1, 4, 4]


@pytest.mark.parametrize("sizes", [(), (0,), (2, 2)])
def test_bad_warmup_sizes_are_refused(sizes: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="warmup_batch_sizes"):
        VersionPolicy(warmup_batch_sizes=sizes)


def test_a_warmup_size_past_max_batch_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="warmup batch size 16 exceeds max_batch_size 8"):
        ModelConfig(
            batching=BatchingConfig(max_batch_size=8), versions=VersionPolicy(warmup_batch_sizes=(1, 16))
        )
