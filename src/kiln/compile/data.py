"""Sample sets for calibration and validation.

On disk: a folder of ``.npz`` files (or one ``.npz``). Each file holds one array per model input,
named after the input, batch on axis 0; optionally ``_label`` (one label per sample) and ``_key``
(one stratification key per sample, e.g. a user segment). Write one with
``np.savez(path, dense=..., sparse=..., _label=..., _key=...)``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiln.errors import ConfigError, describe
from kiln.types import Array, TensorSpec, datatype_of

LABEL_KEY = "_label"
STRATIFY_KEY = "_key"


@dataclass(frozen=True)
class SampleSet:
    """Samples for calibration or validation: per-input arrays with the sample index on axis 0.

    Every array (inputs, ``labels``, ``keys``) has the same length on axis 0. ``labels`` holds one
    label per sample (class index, or 0/1 click) and ``keys`` one stratification key per sample.
    """

    inputs: Mapping[str, Array]
    labels: Array | None = None
    keys: Array | None = None

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("a sample set needs at least one input array")
        lengths = {name: _length(a) for name, a in self.inputs.items()}
        if self.labels is not None:
            lengths[LABEL_KEY] = _length(self.labels)
        if self.keys is not None:
            lengths[STRATIFY_KEY] = _length(self.keys)
        if len(set(lengths.values())) != 1:
            raise ConfigError(
                describe(
                    "sample arrays disagree in their number of samples (axis 0)",
                    seen=lengths,
                    fix="give every input, _label and _key the same length on axis 0",
                )
            )

    def __len__(self) -> int:
        return _length(next(iter(self.inputs.values())))

    def batches(self, batch_size: int) -> Iterator[dict[str, Array]]:
        """Consecutive input batches of at most ``batch_size`` samples."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, seen {batch_size}")
        for start in range(0, len(self), batch_size):
            yield {name: a[start : start + batch_size] for name, a in self.inputs.items()}

    def take(self, indices: Sequence[int] | Array) -> SampleSet:
        """The samples at ``indices``, in that order."""
        index = np.asarray(indices, dtype=np.int64)
        return SampleSet(
            inputs={name: a[index] for name, a in self.inputs.items()},
            labels=None if self.labels is None else self.labels[index],
            keys=None if self.keys is None else self.keys[index],
        )


def _length(array: Array) -> int:
    if array.ndim == 0:
        raise ConfigError(describe("a sample array is a scalar", fix="put the sample index on axis 0"))
    return int(array.shape[0])


def load_samples(path: Path, *, key_name: str = STRATIFY_KEY) -> SampleSet:
    """Read a folder of ``.npz`` files (or one file). ``ConfigError`` naming the file on a bad one,
    on an empty folder, or on files whose arrays disagree in names or non-batch shapes.

    ``key_name`` is the array that holds the stratification keys (``_key`` unless the build's
    ``stratify_by`` names another); ``_label`` holds the labels. Files are read in name order.
    """
    path = Path(path)
    if path.is_dir():
        files = _npz_files(path)
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(describe("sample path does not exist", seen=str(path), fix="give a folder or .npz"))
    parts = [_read_npz(f) for f in files]
    return _concatenate(parts, [str(f) for f in files], key_name=key_name)


def _npz_files(folder: Path) -> list[Path]:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    others = [p.name for p in entries if not (p.is_file() and p.suffix == ".npz")]
    if others:
        raise ConfigError(
            describe(
                f"sample folder {folder} holds entries that are not .npz files",
                seen=others[:5],
                fix="keep only .npz files written with numpy.savez there",
            )
        )
    if not entries:
        raise ConfigError(
            describe(f"sample folder {folder} is empty", fix="put .npz files (numpy.savez) in it")
        )
    return entries


def _read_npz(file: Path) -> dict[str, Array]:
    if file.suffix != ".npz":
        raise ConfigError(
            describe(f"sample file {file} is not an .npz file", fix="save samples with numpy.savez")
        )
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ConfigError(
            describe(
                f"sample file {file} cannot be read",
                seen=str(exc)[:200],
                fix="rewrite it with numpy.savez (plain numeric arrays, no pickled objects)",
            )
        ) from None
    if not arrays:
        raise ConfigError(describe(f"sample file {file} holds no arrays", fix="save one array per input"))
    return arrays


def _concatenate(parts: Sequence[Mapping[str, Array]], sources: Sequence[str], *, key_name: str) -> SampleSet:
    first_names = sorted(parts[0])
    for arrays, source in zip(parts, sources, strict=True):
        if sorted(arrays) != first_names:
            raise ConfigError(
                describe(
                    f"{source} holds arrays {sorted(arrays)} but {sources[0]} holds {first_names}",
                    fix="give every file the same array names",
                )
            )
        for name, array in arrays.items():
            want = parts[0][name]
            if array.ndim == 0 or array.shape[1:] != want.shape[1:] or array.dtype != want.dtype:
                raise ConfigError(
                    describe(
                        f"array {name!r} in {source} has shape {list(array.shape)} and dtype {array.dtype}, "
                        f"but in {sources[0]} shape {list(want.shape)} and dtype {want.dtype}",
                        fix="all files must agree on every axis but the first (the samples) and on dtype",
                    )
                )
    merged = {name: np.concatenate([p[name] for p in parts]) for name in first_names}
    return _split_extras(merged, key_name=key_name)


def _split_extras(arrays: dict[str, Array], *, key_name: str) -> SampleSet:
    labels = arrays.pop(LABEL_KEY, None)
    keys = arrays.pop(key_name, None)
    if not arrays:
        raise ConfigError(describe("samples hold no input arrays, only labels/keys", fix="add the inputs"))
    return SampleSet(inputs=arrays, labels=labels, keys=keys)


def samples_from_iterator(batches: Iterable[Mapping[str, Array]]) -> SampleSet:
    """Gather batches (input name -> array, optionally ``_label``/``_key``) into one SampleSet."""
    parts = [{name: np.asarray(a) for name, a in batch.items()} for batch in batches]
    if not parts:
        raise ConfigError(describe("no sample batches were given", fix="yield at least one batch"))
    return _concatenate(parts, [f"batch {i}" for i in range(len(parts))], key_name=STRATIFY_KEY)


def check_samples(samples: SampleSet, specs: Sequence[TensorSpec], *, what: str = "calibration") -> None:
    """``ConfigError`` naming every input whose name, datatype or shape does not fit the model.

    Shapes are checked on every axis but the first (the sample axis): a model with a fixed batch
    size still accepts any number of samples.
    """
    problems: list[str] = []
    known = {s.name for s in specs}
    for name in samples.inputs:
        if name not in known:
            problems.append(f"unknown input {name!r} (the model's inputs are {sorted(known)})")
    for spec in specs:
        array = samples.inputs.get(spec.name)
        if array is None:
            problems.append(f"missing input {spec.name!r} ({spec.datatype} {list(spec.shape)})")
            continue
        seen = _datatype_name(array)
        if seen != spec.datatype:
            problems.append(f"input {spec.name!r} is {seen}, the model wants {spec.datatype}")
        per_sample = TensorSpec(spec.name, spec.datatype, (-1, *spec.shape[1:]) if spec.shape else ())
        if not per_sample.accepts_shape(tuple(int(d) for d in array.shape)):
            problems.append(
                f"input {spec.name!r} has shape {list(array.shape)}, the model wants {list(spec.shape)}"
            )
    if problems:
        raise ConfigError(
            describe(
                f"{what} samples do not fit the model: " + "; ".join(problems),
                fix=f"save one array per model input, named after it, sample index on axis 0 "
                f"(inputs: {', '.join(f'{s.name} {s.datatype} {list(s.shape)}' for s in specs)})",
            )
        )


def _datatype_name(array: Array) -> str:
    try:
        return datatype_of(array.dtype)
    except ValueError:
        return str(array.dtype)


def select_samples(samples: SampleSet, count: int, *, stratify: bool = False, seed: int = 0) -> SampleSet:
    """At most ``count`` samples; with ``stratify`` (needs ``keys``), drawn evenly across key values
    so rare segments are represented.

    Evenly means each key value gets the same quota, a segment smaller than its quota gives all it
    has and the rest is shared among the others. Without ``stratify`` the draw is uniform. Both keep
    the original sample order and depend only on ``seed``.
    """
    if count < 1:
        raise ConfigError(describe("sample count must be >= 1", seen=count))
    if stratify and samples.keys is None:
        raise ConfigError(
            describe(
                "stratified sampling needs a key per sample, and these samples have none",
                fix=f"add a {STRATIFY_KEY} array (one key per sample) or turn stratification off",
            )
        )
    if count >= len(samples):
        return samples
    rng = np.random.default_rng(seed)
    if not stratify:
        return samples.take(np.sort(rng.choice(len(samples), size=count, replace=False)))
    assert samples.keys is not None
    values, inverse = np.unique(samples.keys, return_inverse=True)
    available = np.bincount(inverse.ravel(), minlength=len(values))
    quota = allocate_evenly(available, count)
    chosen = [
        rng.choice(np.flatnonzero(inverse.ravel() == k), size=int(q), replace=False)
        for k, q in enumerate(quota)
        if q > 0
    ]
    return samples.take(np.sort(np.concatenate(chosen)))


def allocate_evenly(available: Sequence[int] | Array, count: int) -> Array:
    """How many samples to take from each group: equal shares, capped by what a group has, with the
    leftover of small groups shared among the larger ones (water filling). Sums to ``min(count, total)``.
    """
    have = np.asarray(available, dtype=np.int64)
    quota = np.zeros_like(have)
    left = min(int(count), int(have.sum()))
    while left > 0:
        open_groups = np.flatnonzero(quota < have)
        share = max(left // len(open_groups), 1)
        for g in open_groups:
            add = min(share, int(have[g] - quota[g]), left)
            quota[g] += add
            left -= add
            if left == 0:
                break
    return quota
