from __future__ import annotations

import dataclasses
import math

import pytest
from cache_fakes import TARGET, digest
from hypothesis import given
from hypothesis import strategies as st

from kiln.cache.key import KEY_VERSION, EngineKey, canonical_json, engine_key, key_factors
from kiln.compile.spec import BuildSpec, CalibrationSpec
from kiln.types import ShapeProfile

STRUCTURE = digest("net")
BASE_SPEC = BuildSpec(precision="int8", max_batch_size=32)


def test_key_is_a_stable_sha256_hex() -> None:
    key = engine_key(STRUCTURE, BASE_SPEC, TARGET)
    assert len(key.hex) == 64
    assert key == engine_key(STRUCTURE, BuildSpec(precision="int8", max_batch_size=32), TARGET)
    assert key.short == key.hex[:12]
    assert str(key) == key.hex


@pytest.mark.parametrize(
    "changes",
    [
        {"precision": "fp16"},
        {"max_batch_size": 64},
        {"workspace_bytes": 1 << 20},
        {"per_channel": True},
        {"keep_fp32_nodes": ("head/MatMul",)},
        {"keep_fp32_op_types": ("Softmax",)},
        {"profiles": (ShapeProfile("x", (1, 4), (8, 4), (32, 4)),)},
        {"backend_options": (("intra_op_threads", "4"),)},
        {"calibration": CalibrationSpec(method="entropy")},
        {"calibration": CalibrationSpec(num_samples=128)},
        {"backend": "tensorrt"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_spec_factor_changes_the_key(changes: dict[str, object]) -> None:
    base = engine_key(STRUCTURE, BASE_SPEC, TARGET)
    assert engine_key(STRUCTURE, BASE_SPEC.with_changes(**changes), TARGET) != base


@pytest.mark.parametrize(
    "changes",
    [
        {"backend": "other"},
        {"backend_version": "1.1"},
        {"device_kind": "cuda"},
        {"device_name": "Other CPU"},
        {"arch": "avx512_vnni"},
        {"details": (("isa", "avx2"),)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_target_factor_changes_the_key(changes: dict[str, object]) -> None:
    other = dataclasses.replace(TARGET, **changes)  # type: ignore[arg-type]
    assert engine_key(STRUCTURE, BASE_SPEC, other) != engine_key(STRUCTURE, BASE_SPEC, TARGET)


def test_structure_changes_the_key_and_weights_are_not_a_factor() -> None:
    assert engine_key(digest("other net"), BASE_SPEC, TARGET) != engine_key(STRUCTURE, BASE_SPEC, TARGET)
    factors = key_factors(STRUCTURE, BASE_SPEC, TARGET)
    assert set(factors) == {"key_version", "structure_hash", "spec", "target"}
    assert "weights" not in canonical_json(factors)


def test_accuracy_gate_is_not_a_factor() -> None:
    gated = BASE_SPEC.with_changes(max_accuracy_drop=0.01, task="ctr")
    assert engine_key(STRUCTURE, gated, TARGET) == engine_key(STRUCTURE, BASE_SPEC, TARGET)


def test_fp32_ignores_int8_only_fields() -> None:
    plain = BuildSpec(precision="fp32")
    assert engine_key(STRUCTURE, plain.with_changes(per_channel=True), TARGET) == engine_key(
        STRUCTURE, plain, TARGET
    )


def test_order_of_lists_that_are_sets_does_not_matter() -> None:
    a = BASE_SPEC.with_changes(keep_fp32_nodes=("a", "b"))
    b = BASE_SPEC.with_changes(keep_fp32_nodes=("b", "a"))
    assert engine_key(STRUCTURE, a, TARGET) == engine_key(STRUCTURE, b, TARGET)


def test_key_version_is_a_factor() -> None:
    factors = key_factors(STRUCTURE, BASE_SPEC, TARGET)
    assert factors["key_version"] == KEY_VERSION
    bumped = {**factors, "key_version": KEY_VERSION + 1}
    assert EngineKey.of_factors(bumped) != EngineKey.of_factors(factors)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=6), json_values, min_size=1, max_size=6))
def test_dict_ordering_is_irrelevant(factors: dict[str, object]) -> None:
    reordered = dict(reversed(list(factors.items())))
    assert EngineKey.of_factors(reordered) == EngineKey.of_factors(factors)


def test_canonical_json_refuses_what_is_not_plain_json() -> None:
    with pytest.raises(TypeError, match="not JSON data"):
        canonical_json({"spec": object()})
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"x": math.nan})


def test_engine_key_refuses_a_malformed_hex() -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        EngineKey("ABC")
