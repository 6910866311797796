"""Sample sets: loading .npz folders, checking them against a model, stratified selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiln.compile.data import (
    SampleSet,
    allocate_evenly,
    check_samples,
    load_samples,
    samples_from_iterator,
    select_samples,
)
from kiln.errors import ConfigError
from kiln.types import TensorSpec

SPECS = (TensorSpec("dense", "FP32", (-1, 3)), TensorSpec("ids", "INT64", (-1, 2)))


def write(path: Path, n: int, start: int = 0, **extra: np.ndarray) -> None:
    dense = np.arange(start, start + 3 * n, dtype=np.float32).reshape(n, 3)
    ids = np.arange(start, start + 2 * n, dtype=np.int64).reshape(n, 2)
    np.savez(path, dense=dense, ids=ids, **extra)


def test_sample_set_basics() -> None:
    samples = SampleSet({"a": np.arange(10).reshape(5, 2)}, labels=np.arange(5), keys=np.array(list("aabbc")))
    assert len(samples) == 5
    assert [len(b["a"]) for b in samples.batches(2)] == [2, 2, 1]
    taken = samples.take([4, 0])
    assert taken.inputs["a"].tolist() == [[8, 9], [0, 1]]
    assert taken.labels is not None
    assert taken.labels.tolist() == [4, 0]
    assert taken.keys is not None
    assert taken.keys.tolist() == ["c", "a"]


def test_sample_arrays_must_agree_in_length() -> None:
    with pytest.raises(ConfigError, match="_label"):
        SampleSet({"a": np.zeros((5, 2))}, labels=np.zeros(4))


def test_load_folder_concatenates_files_in_name_order(tmp_path: Path) -> None:
    write(tmp_path / "b.npz", 2, start=100, _label=np.array([1, 0]), _key=np.array([7, 7]))
    write(tmp_path / "a.npz", 3, _label=np.array([0, 0, 1]), _key=np.array([1, 2, 3]))
    samples = load_samples(tmp_path)
    assert len(samples) == 5
    assert sorted(samples.inputs) == ["dense", "ids"]
    assert samples.inputs["dense"][3, 0] == 100.0
    assert samples.labels is not None
    assert samples.labels.tolist() == [0, 0, 1, 1, 0]
    assert samples.keys is not None
    assert samples.keys.tolist() == [1, 2, 3, 7, 7]
    check_samples(samples, SPECS)


def test_load_one_file_and_a_named_key(tmp_path: Path) -> None:
    write(tmp_path / "one.npz", 4, segment=np.array([0, 1, 0, 1]))
    samples = load_samples(tmp_path / "one.npz", key_name="segment")
    assert samples.keys is not None
    assert samples.keys.tolist() == [0, 1, 0, 1]
    assert "segment" not in samples.inputs


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        load_samples(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_samples(tmp_path / "nope")


def test_folder_with_a_non_npz_file(tmp_path: Path) -> None:
    write(tmp_path / "a.npz", 2)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"notes\.txt"):
        load_samples(tmp_path)


def test_single_non_npz_file(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(ConfigError, match=r"x\.npy is not an \.npz"):
        load_samples(tmp_path / "x.npy")


def test_corrupt_npz_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "a.npz", 2)
    (tmp_path / "b.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ConfigError, match=r"b\.npz cannot be read"):
        load_samples(tmp_path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", dense=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ConfigError, match="cannot be read"):
        load_samples(tmp_path)


def test_files_disagreeing_in_names(tmp_path: Path) -> None:
    write(tmp_path / "a.npz", 2)
    np.savez(tmp_path / "b.npz", dense=np.zeros((2, 3), np.float32))
    with pytest.raises(
        ConfigError, match=r"b\.npz holds arrays \['dense'\] but .*a\.npz holds \['dense', 'ids'\]"
    ):
        load_samples(tmp_path)


def test_files_disagreeing_in_non_batch_shape(tmp_path: Path) -> None:
    write(tmp_path / "a.npz", 2)
    np.savez(tmp_path / "b.npz", dense=np.zeros((2, 4), np.float32), ids=np.zeros((2, 2), np.int64))
    with pytest.raises(ConfigError, match=r"'dense' in .*b\.npz has shape \[2, 4\]"):
        load_samples(tmp_path)


def test_samples_from_iterator() -> None:
    batches = [{"dense": np.zeros((2, 3), np.float32), "_label": np.array([0, 1])} for _ in range(3)]
    samples = samples_from_iterator(iter(batches))
    assert len(samples) == 6
    assert samples.labels is not None
    with pytest.raises(ConfigError, match="no sample batches"):
        samples_from_iterator([])


def test_check_samples_names_every_problem() -> None:
    samples = SampleSet({"dense": np.zeros((4, 5), np.float64), "extra": np.zeros((4, 1), np.float32)})
    with pytest.raises(ConfigError) as info:
        check_samples(samples, SPECS, what="validation")
    message = str(info.value)
    assert message.startswith("validation samples do not fit the model")
    assert "unknown input 'extra'" in message
    assert "missing input 'ids'" in message
    assert "'dense' is FP64, the model wants FP32" in message
    assert "'dense' has shape [4, 5], the model wants [-1, 3]" in message


def test_check_samples_ignores_the_sample_axis() -> None:
    fixed_batch = (TensorSpec("x", "FP32", (1, 3)),)
    check_samples(SampleSet({"x": np.zeros((10, 3), np.float32)}), fixed_batch)
    with pytest.raises(ConfigError, match=r"\[10, 3, 1\]"):
        check_samples(SampleSet({"x": np.zeros((10, 3, 1), np.float32)}), fixed_batch)


def test_select_without_stratification_is_seeded_and_ordered() -> None:
    samples = SampleSet({"x": np.arange(100)})
    a = select_samples(samples, 10, seed=3).inputs["x"]
    b = select_samples(samples, 10, seed=3).inputs["x"]
    assert a.tolist() == b.tolist()
    assert a.tolist() == sorted(a.tolist())
    assert len(set(a.tolist())) == 10
    assert select_samples(samples, 1000) is samples


def test_stratified_selection_represents_a_rare_segment() -> None:
    keys = np.array(["common"] * 990 + ["rare"] * 10)  # a 1 % segment
    samples = SampleSet({"x": np.arange(1000)}, keys=keys)
    for seed in range(5):
        picked = select_samples(samples, 100, stratify=True, seed=seed)
        assert picked.keys is not None
        rare = int((picked.keys == "rare").sum())
        assert len(picked) == 100
        assert rare == 10  # its fair share (50 of 100) is more than it has, so all of it
        assert rare / len(picked) >= 0.01
    three = SampleSet({"x": np.arange(1000)}, keys=np.array([0] * 900 + [1] * 90 + [2] * 10))
    picked = select_samples(three, 30, stratify=True)
    assert picked.keys is not None
    assert np.bincount(picked.keys).tolist() == [10, 10, 10]


def test_stratified_selection_needs_keys() -> None:
    with pytest.raises(ConfigError, match="_key"):
        select_samples(SampleSet({"x": np.arange(10)}), 5, stratify=True)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=8), st.integers(1, 200))
def test_allocate_evenly_is_fair(available: list[int], count: int) -> None:
    quota = allocate_evenly(available, count)
    assert int(quota.sum()) == min(count, sum(available))
    assert all(0 <= q <= a for q, a in zip(quota, available, strict=True))
    unfilled = [q for q, a in zip(quota, available, strict=True) if q < a]
    if unfilled:  # a group that did not get all it has got at least as much as any other, give or take one
        assert min(unfilled) >= int(quota.max()) - 1
