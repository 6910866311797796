"""Which batch sizes a new version is warmed up and checked on: each engine's plan, or
VersionPolicy.warmup_batch_sizes."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from runtime_fakes import FakeEngine, x_rows

from kiln.errors import ConfigError
from kiln.runtime import (
    BatchingConfig,
    FallbackConfig,
    GoldenSet,
    ModelConfig,
    ModelSlot,
    VersionPolicy,
    VersionState,
    VersionStatus,
)
from kiln.types import Array, Tensors


def _config(warmup: tuple[int, ...] | None) -> ModelConfig:
    return ModelConfig(
        num_instances=2,
        batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=0, preferred_batch_sizes=(4,)),
        fallback=FallbackConfig(probe_in_background=False),
        versions=VersionPolicy(warmup_batch_sizes=warmup),
    )


class Recorder:
    """An output function that records the rows of every run of one engine."""

    def __init__(self, *, nan: bool = False) -> None:
        self.seen: list[int] = []
        self.nan = nan
        self._lock = threading.Lock()

    def __call__(self, inputs: Tensors) -> dict[str, Array]:
        with self._lock:
            self.seen.append(len(inputs["x"]))
        y = np.asarray(inputs["x"], np.float32) + (np.nan if self.nan else 0.0)
        return {"y": y}


def _load(
    warmup: tuple[int, ...] | None,
    engine: FakeEngine,
    fallback: FakeEngine | None = None,
    golden: GoldenSet | None = None,
) -> VersionStatus:
    async def main() -> VersionStatus:
        slot = ModelSlot("m", _config(warmup))
        status = await slot.load_version("1", engine, fallback=fallback, golden=golden).wait(timeout_s=10)
        await slot.aclose()
        return status

    return asyncio.run(main())


def _rows_seen(warmup: tuple[int, ...] | None, prepares_per_shape: bool | None = None) -> list[int]:
    record = Recorder()
    status = _load(warmup, FakeEngine(output_fn=record, prepares_per_shape=prepares_per_shape))
    assert status.state is VersionState.READY
    return sorted(record.seen)


def test_by_default_every_batch_size_is_warmed_on_every_instance() -> None:
    assert _rows_seen(None) == [1, 1, 4, 4, 8, 8]
    assert _rows_seen(None, prepares_per_shape=True) == [1, 1, 4, 4, 8, 8]


def test_an_engine_that_runs_any_shape_is_warmed_on_batch_one() -> None:
    assert _rows_seen(None, prepares_per_shape=False) == [1, 1]


def test_a_policy_can_warm_up_on_fewer_sizes() -> None:
    assert _rows_seen((1,)) == [1, 1]
    assert _rows_seen((4, 1)) == [1, 1, 4, 4]
    assert _rows_seen((1, 8), prepares_per_shape=False) == [1, 1, 8, 8]


def test_primary_and_fallback_are_each_warmed_by_their_own_plan() -> None:
    primary, fallback = Recorder(), Recorder()
    status = _load(
        None,
        FakeEngine(output_fn=primary, prepares_per_shape=True),
        FakeEngine(output_fn=fallback, prepares_per_shape=False),
    )
    assert status.state is VersionState.READY
    assert sorted(primary.seen) == [1, 1, 4, 4, 8, 8]
    assert fallback.seen == [1]  # one fallback instance


def test_a_batch_one_warmup_still_checks_the_outputs() -> None:
    status = _load(None, FakeEngine(output_fn=Recorder(nan=True), prepares_per_shape=False))
    assert status.state is VersionState.FAILED
    assert status.reason == "check failed: primary batch 1: output 'y' holds NaN or Inf"


def test_a_batch_one_warmup_still_runs_the_golden_set() -> None:
    golden = GoldenSet(inputs=x_rows(3), outputs={"y": x_rows(3)["x"] + 1.0})
    status = _load(None, FakeEngine(0.0, prepares_per_shape=False), golden=golden)
    assert status.state is VersionState.FAILED
    assert "golden output 'y' differs in 12 of 12 values" in (status.reason or "")
    assert _load(None, FakeEngine(1.0, prepares_per_shape=False), golden=golden).state is VersionState.READY


@pytest.mark.parametrize("sizes", [(), (0,), (2, 2)])
def test_bad_warmup_sizes_are_refused(sizes: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="warmup_batch_sizes"):
        VersionPolicy(warmup_batch_sizes=sizes)


def test_a_warmup_size_past_max_batch_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="warmup batch size 16 exceeds max_batch_size 8"):
        ModelConfig(
            batching=BatchingConfig(max_batch_size=8), versions=VersionPolicy(warmup_batch_sizes=(1, 16))
        )
