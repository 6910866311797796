"""How far a version's batches are padded depends on its primary engine (``prepares_per_shape``)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from runtime_fakes import FakeEngine, x_rows

from kiln.runtime import BatchingConfig, FallbackConfig, ModelConfig, ModelSlot, VersionState


def _batch_rows(prepares_per_shape: bool | None, rows: int, *, pad: bool = True) -> tuple[int, int]:
    """(rows the engine ran, padding rows counted) for one request of ``rows`` on an idle model."""
    config = ModelConfig(
        batching=BatchingConfig(
            max_batch_size=8, max_queue_delay_us=0, preferred_batch_sizes=(4,), pad_to_preferred=pad
        ),
        fallback=FallbackConfig(probe_in_background=False),
    )

    async def main() -> tuple[int, int]:
        slot = ModelSlot("m", config)
        engine = FakeEngine(1.0, prepares_per_shape=prepares_per_shape)
        assert (await slot.load_version("1", engine).wait(timeout_s=10)).state is VersionState.READY
        x = x_rows(rows)
        result = await slot.infer(x)
        np.testing.assert_array_equal(result.outputs["y"], x["x"] + 1.0)
        padding = slot.stats().model.padding_rows
        await slot.aclose()
        return result.batch_rows, padding

    return asyncio.run(main())


def test_an_engine_that_runs_any_shape_is_not_padded_past_the_preferred_sizes() -> None:
    assert _batch_rows(False, 6) == (6, 0)
    assert _batch_rows(False, 3) == (4, 1)  # a preferred size named in the config still pads


@pytest.mark.parametrize("prepares", [True, None])
def test_an_engine_that_prepares_per_shape_is_padded_to_its_buckets(prepares: bool | None) -> None:
    assert _batch_rows(prepares, 6) == (8, 2)
    assert _batch_rows(prepares, 3) == (4, 1)


def test_padding_off_runs_exact_rows_on_any_engine() -> None:
    assert _batch_rows(True, 6, pad=False) == (6, 0)
