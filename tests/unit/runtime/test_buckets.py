from __future__ import annotations

import numpy as np
import pytest

from kiln.runtime.batching.buckets import assemble, bucket_sizes, pad_sizes, pick_bucket, split, warmup_sizes


def test_bucket_sizes_add_the_maximum_and_drop_sizes_above_it() -> None:
    assert bucket_sizes((8, 2, 4), 16) == (2, 4, 8, 16)
    assert bucket_sizes((32,), 16) == (16,)
    assert bucket_sizes((), 8) == (8,)


@pytest.mark.parametrize(("rows", "expected"), [(1, 2), (2, 2), (3, 4), (5, 8), (8, 8), (9, 9)])
def test_pick_bucket_takes_the_smallest_that_fits(rows: int, expected: int) -> None:
    assert pick_bucket(rows, (2, 4, 8)) == expected


def test_pick_bucket_without_buckets_keeps_the_rows() -> None:
    assert pick_bucket(5, ()) == 5


def test_an_engine_that_prepares_per_shape_pads_to_the_preferred_sizes_and_the_maximum() -> None:
    assert pad_sizes((4, 8), 16, pad_to_preferred=True, prepares_per_shape=True) == (4, 8, 16)


def test_an_engine_that_runs_any_shape_pads_only_to_the_preferred_sizes_named() -> None:
    pads = pad_sizes((8, 4), 16, pad_to_preferred=True, prepares_per_shape=False)
    assert pads == (4, 8)
    assert [pick_bucket(rows, pads) for rows in (3, 5, 9, 16)] == [4, 8, 9, 16]


@pytest.mark.parametrize("prepares", [True, False])
def test_nothing_is_padded_without_preferred_sizes_or_when_padding_is_off(prepares: bool) -> None:
    assert pad_sizes((), 16, pad_to_preferred=True, prepares_per_shape=prepares) == ()
    assert pad_sizes((4,), 16, pad_to_preferred=False, prepares_per_shape=prepares) == ()


def test_warmup_covers_one_every_bucket_and_the_maximum() -> None:
    assert warmup_sizes((4,), 8) == (1, 4, 8)
    assert warmup_sizes((), 1) == (1,)


def test_one_request_without_padding_is_passed_through_without_a_copy() -> None:
    x = np.ones((3, 2), np.float32)
    assert assemble([{"x": x}], ["x"], 3)["x"] is x


def test_assemble_joins_in_order_and_pads_with_zero_rows() -> None:
    a = np.full((1, 2), 1.0, np.float32)
    b = np.full((2, 2), 2.0, np.float32)
    joined = assemble([{"x": a}, {"x": b}], ["x"], 4)["x"]
    assert joined.dtype == np.float32
    np.testing.assert_array_equal(joined, [[1, 1], [2, 2], [2, 2], [0, 0]])


def test_a_single_request_padded_up_is_copied() -> None:
    a = np.full((3, 2), 5, np.int64)
    joined = assemble([{"x": a}], ["x"], 4)["x"]
    np.testing.assert_array_equal(joined, [[5, 5]] * 3 + [[0, 0]])


def test_split_gives_views_per_request_and_leaves_padding_out() -> None:
    y = np.arange(8).reshape(4, 2)
    parts = split({"y": y}, [1, 2])
    np.testing.assert_array_equal(parts[0]["y"], [[0, 1]])
    np.testing.assert_array_equal(parts[1]["y"], [[2, 3], [4, 5]])
    assert np.shares_memory(parts[1]["y"], y)
