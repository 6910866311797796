from __future__ import annotations

import pytest

from kiln.errors import ConfigError
from kiln.runtime.config import (
    BatchingConfig,
    FallbackConfig,
    ModelConfig,
    RetryConfig,
    VersionPolicy,
    settings_needing_reload,
    with_live_settings,
)
from kiln.runtime.slot import ModelSlot


def test_defaults_are_valid() -> None:
    config = ModelConfig()
    assert config.batching.max_queue_delay_s == 0.001
    assert config.versions.max_loaded_versions == 1


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: BatchingConfig(max_batch_size=0), ["max_batch_size", "0"]),
        (lambda: BatchingConfig(max_queue_delay_us=-1), ["max_queue_delay_us", "-1"]),
        (lambda: BatchingConfig(max_queue_size=0), ["max_queue_size", "0"]),
        (lambda: BatchingConfig(default_timeout_s=0.0), ["default_timeout_s", "0.0"]),
        (lambda: BatchingConfig(max_batch_size=8, preferred_batch_sizes=(4, 16)), ["16", "max_batch_size 8"]),
        (lambda: BatchingConfig(preferred_batch_sizes=(2, 2)), ["repeat", "2"]),
        (lambda: RetryConfig(max_retries=-1), ["max_retries", "-1"]),
        (lambda: FallbackConfig(probe_interval_s=0), ["probe_interval_s", "0"]),
        (lambda: VersionPolicy(max_loaded_versions=0), ["max_loaded_versions", "0"]),
        (lambda: VersionPolicy(drain_timeout_s=-1), ["drain_timeout_s", "-1"]),
        (lambda: ModelConfig(num_instances=0), ["num_instances", "0"]),
        (lambda: ModelConfig(num_fallback_instances=100), ["num_fallback_instances", "100"]),
    ],
)
def test_bad_values_name_the_field_and_the_value(build: object, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        build()  # type: ignore[operator]
    for word in words:
        assert word in str(info.value)


def test_preferred_sizes_are_sorted() -> None:
    assert BatchingConfig(preferred_batch_sizes=(8, 2, 4)).preferred_batch_sizes == (2, 4, 8)


def test_only_the_batchers_settings_apply_while_serving() -> None:
    old = ModelConfig(batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=100))
    live = BatchingConfig(max_batch_size=8, max_queue_delay_us=900, max_queue_size=5, default_timeout_s=2.0)
    assert settings_needing_reload(old, ModelConfig(batching=live)) == ()
    new = ModelConfig(
        num_instances=2,
        batching=BatchingConfig(max_batch_size=16, max_queue_delay_us=900, preferred_batch_sizes=(4,)),
        versions=VersionPolicy(max_loaded_versions=2),
    )
    assert settings_needing_reload(old, new) == (
        "num_instances",
        "batching.max_batch_size",
        "batching.preferred_batch_sizes",
        "versions",
    )
    taken = with_live_settings(old, new)
    assert taken.batching.max_queue_delay_us == 900
    assert (taken.num_instances, taken.batching.max_batch_size, taken.versions) == (1, 8, old.versions)
    assert settings_needing_reload(taken, new) == settings_needing_reload(old, new)


def test_a_slot_takes_live_settings_and_refuses_the_rest_without_changing_anything() -> None:
    slot = ModelSlot("m", ModelConfig(batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=100)))
    faster = BatchingConfig(max_batch_size=8, max_queue_delay_us=900, max_queue_size=3)
    slot.reconfigure(ModelConfig(batching=faster))
    assert slot.batcher.limits.max_queue_delay_s == pytest.approx(900e-6)
    assert slot.batcher.max_queue_size == 3
    assert slot.config.batching.max_queue_delay_us == 900
    with pytest.raises(ConfigError, match=r"batching\.max_batch_size.*unload and load"):
        slot.reconfigure(ModelConfig(batching=BatchingConfig(max_batch_size=16, max_queue_delay_us=5)))
    assert slot.batcher.limits.max_batch_size == 8
    assert slot.batcher.limits.max_queue_delay_s == pytest.approx(900e-6)
    assert slot.config.batching.max_queue_delay_us == 900
