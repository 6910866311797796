"""The pure decisions: build plan, accuracy and target checks, eviction plan, sizes, prefixes."""

from __future__ import annotations

import dataclasses

import pytest
from cache_fakes import TARGET, digest, make_entry, make_manifest

from kiln.cache.gc import parse_byte_size, plan_eviction
from kiln.cache.key import EngineKey
from kiln.cache.plan import check_accuracy, check_target, plan_build, regression
from kiln.cache.remove import match_prefix
from kiln.errors import AccuracyError, BuildError, ConfigError

KEY = EngineKey(digest("key"))
W1, W2, W3 = digest("w1"), digest("w2"), digest("w3")


def test_empty_store_plans_a_full_build() -> None:
    plan = plan_build(KEY, W1, [])
    assert (plan.kind, plan.entry, plan.discard) == ("build", None, ())


def test_same_weights_is_a_hit() -> None:
    mine = make_entry(KEY.hex, "w1")
    plan = plan_build(KEY, W1, [make_entry(KEY.hex, "w2", last_used=9.0), mine])
    assert plan.kind == "hit"
    assert plan.entry is mine


def test_other_weights_plan_a_refit_from_the_most_recently_used() -> None:
    old = make_entry(KEY.hex, "w2", last_used=1.0)
    recent = make_entry(KEY.hex, "w3", last_used=5.0)
    plan = plan_build(KEY, W1, [old, recent])
    assert plan.kind == "refit"
    assert plan.entry is recent


def test_unreadable_entries_are_discarded_never_served() -> None:
    broken_exact = make_entry(KEY.hex, "w1", readable=False)
    plan = plan_build(KEY, W1, [broken_exact])
    assert plan.kind == "build"
    assert plan.discard == (broken_exact,)

    sibling = make_entry(KEY.hex, "w2")
    plan = plan_build(KEY, W1, [broken_exact, sibling])
    assert (plan.kind, plan.entry, plan.discard) == ("refit", sibling, (broken_exact,))


def test_unreadable_sibling_is_not_a_refit_base() -> None:
    plan = plan_build(KEY, W1, [make_entry(KEY.hex, "w2", readable=False)])
    assert plan.kind == "build"
    assert len(plan.discard) == 1


def test_accuracy_above_the_bound_fails_naming_both_values() -> None:
    with pytest.raises(AccuracyError, match=r"0\.05.*0\.01"):
        check_accuracy({"drop": 0.05}, 0.01, what="engine")


@pytest.mark.parametrize(
    ("accuracy", "bound"),
    [({"drop": 0.05}, None), ({"drop": 0.005}, 0.01), (None, 0.01), ({"drop": "n/a"}, 0.01), ({}, 0.0)],
)
def test_accuracy_passes_without_bound_without_drop_or_within_bound(
    accuracy: dict[str, object] | None, bound: float | None
) -> None:
    check_accuracy(accuracy, bound, what="engine")


def test_target_mismatch_names_both_targets() -> None:
    other = dataclasses.replace(TARGET, device_kind="cuda", arch="sm90")
    manifest = make_manifest(KEY.hex, W1, target=other)
    with pytest.raises(BuildError, match=r"cuda-sm90.*cpu-avx2"):
        check_target(manifest, TARGET, where="entry")
    check_target(make_manifest(KEY.hex, W1), TARGET, where="entry")


def test_eviction_takes_least_recently_used_until_it_fits() -> None:
    k = digest("k")
    a = make_entry(k, "a", last_used=1.0, size_bytes=100)
    b = make_entry(k, "b", last_used=2.0, size_bytes=100)
    c = make_entry(k, "c", last_used=3.0, size_bytes=100)
    plan = plan_eviction([c, a, b], max_bytes=150)
    assert plan.evict == (a, b)
    assert (plan.total_bytes, plan.remaining_bytes) == (300, 100)
    assert plan_eviction([a, b, c], max_bytes=300).evict == ()
    assert plan_eviction([a, b, c], max_bytes=None).evict == ()


def test_eviction_skips_locked_keys_even_when_over_budget() -> None:
    locked_key, free_key = digest("busy"), digest("free")
    oldest = make_entry(locked_key, "a", last_used=1.0)
    newer = make_entry(free_key, "b", last_used=2.0)
    plan = plan_eviction([oldest, newer], max_bytes=0, locked_keys={locked_key})
    assert plan.evict == (newer,)
    assert plan.skipped_locked == (oldest,)
    assert plan.remaining_bytes == 100


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("500MB", 500_000_000),
        ("2GiB", 2 * 2**30),
        ("2gib", 2 * 2**30),
        ("1.5 KiB", 1536),
        ("3k", 3072),
        ("0", 0),
        ("7B", 7),
    ],
)
def test_parse_byte_size(text: str, expected: int) -> None:
    assert parse_byte_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "5XB", "-1GB", "1e9"])
def test_parse_byte_size_refuses_garbage(text: str) -> None:
    with pytest.raises(ConfigError, match="not a byte size"):
        parse_byte_size(text)


def test_match_prefix() -> None:
    k1, k2 = "ab" + digest("1")[2:], "ac" + digest("2")[2:]
    e1, e1b, e2 = make_entry(k1, "w1"), make_entry(k1, "w2"), make_entry(k2, "w1")
    entries = [e1, e1b, e2]
    assert match_prefix(entries, "ab") == (e1, e1b)
    assert match_prefix(entries, f"AB/{W2[:6]}") == (e1b,)
    with pytest.raises(ConfigError, match="ambiguous: it matches 2 keys"):
        match_prefix(entries, "a")
    with pytest.raises(ConfigError, match="no cache entry matches"):
        match_prefix(entries, "ff")
    with pytest.raises(ConfigError, match="not a cache entry prefix"):
        match_prefix(entries, "zz")
    with pytest.raises(ConfigError, match="not a cache entry prefix"):
        match_prefix(entries, "")


@pytest.mark.parametrize(
    ("new", "old", "regressed"),
    [
        (0.19, 0.1, False),  # within 2x: a retrain may move the error
        (0.21, 0.1, True),
        (None, 0.1, True),  # a non-finite error is stored as null
        (0.5, None, False),  # no baseline figure: nothing to compare
    ],
)
def test_an_update_regresses_past_twice_the_base_error(
    new: float | None, old: float | None, regressed: bool
) -> None:
    reason = regression({"rel_l2_error": new}, {"rel_l2_error": old})
    assert (reason is not None) == regressed
    if regressed:
        assert "previous engine" in str(reason)


def test_no_report_is_no_regression() -> None:
    assert regression(None, {"rel_l2_error": 0.1}) is None
    assert regression({"drop": 0.1}, None) is None
