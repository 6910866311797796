"""Batch buckets: pick the padded size of a batch, join requests into it, split results back.

A *bucket* is a batch size the engine was built or tuned for (its profile points). Padding a batch
of 5 rows up to the bucket 8 costs 3 rows of compute but runs a shape the engine knows well.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence

import numpy as np

from kiln.types import Array, Tensors


def bucket_sizes(preferred: Sequence[int], max_batch_size: int) -> tuple[int, ...]:
    """Sorted distinct sizes that a batch may be padded to: the preferred sizes plus the maximum."""
    return tuple(sorted({*(s for s in preferred if 1 <= s <= max_batch_size), max_batch_size}))


def pad_sizes(
    preferred: Sequence[int], max_batch_size: int, *, pad_to_preferred: bool, prepares_per_shape: bool
) -> tuple[int, ...]:
    """The sizes one engine's batches are padded up to; empty: a batch runs on exactly its rows.

    Nothing is padded without ``pad_to_preferred`` or without preferred sizes. An engine that
    prepares each shape (``prepares_per_shape``) is padded to the buckets it was warmed up on: the
    preferred sizes and ``max_batch_size``. One that runs any shape unprepared (ONNX Runtime on
    CPU) is padded only to the preferred sizes named; a batch above the largest of them runs on its
    rows, since padding it to ``max_batch_size`` would be compute spent on zeros.
    """
    if not pad_to_preferred or not preferred:
        return ()
    if prepares_per_shape:
        return bucket_sizes(preferred, max_batch_size)
    return tuple(sorted({s for s in preferred if 1 <= s <= max_batch_size}))


def pick_bucket(rows: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``rows``; ``rows`` itself when none does or none are given."""
    index = bisect_left(buckets, rows)
    return buckets[index] if index < len(buckets) else rows


def warmup_sizes(preferred: Sequence[int], max_batch_size: int) -> tuple[int, ...]:
    """Batch sizes a new version is warmed up on: 1, every preferred size and the maximum."""
    return tuple(sorted({1, *bucket_sizes(preferred, max_batch_size)}))


def assemble(parts: Sequence[Tensors], names: Sequence[str], padded_rows: int) -> dict[str, Array]:
    """Join the requests' inputs along axis 0, with zero rows added up to ``padded_rows``.

    One request without padding is passed through without a copy; otherwise each input is
    allocated once and filled in place.
    """
    if len(parts) == 1:
        only = parts[0]
        rows = len(only[names[0]])
        if rows == padded_rows:
            return {name: only[name] for name in names}
    joined: dict[str, Array] = {}
    for name in names:
        arrays = [part[name] for part in parts]
        first = arrays[0]
        out = np.empty((padded_rows, *first.shape[1:]), dtype=first.dtype)
        rows = sum(len(a) for a in arrays)
        np.concatenate(arrays, axis=0, out=out[:rows])
        if padded_rows > rows:
            out[rows:] = 0
        joined[name] = out
    return joined


def split(outputs: Mapping[str, Array], row_counts: Sequence[int]) -> list[dict[str, Array]]:
    """Slice each output back into per-request views (no copies); padding rows are left out."""
    parts: list[dict[str, Array]] = []
    start = 0
    for rows in row_counts:
        stop = start + rows
        parts.append({name: value[start:stop] for name, value in outputs.items()})
        start = stop
    return parts
