"""Sample sets for an example: drawn in fixed blocks, labelled, cut into ``.npz`` files.

Sample ``i`` of a set depends only on (example, size, seed, kind, i): blocks of a fixed size are
drawn from their own random stream, so asking for more samples or another file size never changes
the samples already seen.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import ModelProto

from kiln.compile.data import LABEL_KEY
from kiln.errors import ConfigError, describe
from kiln.examples._graph import rng_for
from kiln.examples._ort import Runner
from kiln.types import Array

SampleFn = Callable[[str, np.random.Generator, int], dict[str, Array]]
LabelFn = Callable[[list[Array], np.random.Generator], Array]
PART_PREFIX = "part-"
_savez: Callable[..., None] = np.savez


@dataclass(frozen=True, slots=True)
class SamplePlan:
    """What to draw: ``count`` samples from stream ``stream`` of ``seed`` in blocks of ``block_size``."""

    size: str
    seed: int
    stream: int
    count: int
    block_size: int


def iter_blocks(
    plan: SamplePlan, sample: SampleFn, *, labels: LabelFn | None = None, model: ModelProto | None = None
) -> Iterator[dict[str, Array]]:
    """Blocks of samples (the last one cut short), with ``_label`` when ``labels`` is given."""
    runner = Runner(model) if labels is not None and model is not None else None
    for block, start in enumerate(range(0, plan.count, plan.block_size)):
        arrays = sample(plan.size, rng_for(plan.seed, plan.stream, block), plan.block_size)
        wanted = min(plan.block_size, plan.count - start)
        arrays = {name: value[:wanted] for name, value in arrays.items()}
        if runner is not None and labels is not None:
            inputs = {k: v for k, v in arrays.items() if not k.startswith("_")}
            arrays[LABEL_KEY] = labels(runner.run(inputs), rng_for(plan.seed, plan.stream, block, 1))
        yield arrays


def rechunk(blocks: Iterator[dict[str, Array]], per_file: int) -> Iterator[dict[str, Array]]:
    """The same samples regrouped into pieces of ``per_file`` (the last one may be smaller)."""
    pending: list[dict[str, Array]] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += len(next(iter(block.values())))
        while held >= per_file:
            merged = concatenate(pending)
            yield {k: v[:per_file] for k, v in merged.items()}
            pending = [{k: v[per_file:] for k, v in merged.items()}]
            held -= per_file
    if held:
        yield concatenate(pending)


def concatenate(parts: list[dict[str, Array]]) -> dict[str, Array]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def check_output_dir(out_dir: Path) -> None:
    """``ConfigError`` unless ``out_dir`` is absent, empty, or holds only an earlier sample set."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(
            describe("sample output path is not a folder", seen=str(out_dir), fix="give a folder path")
        )
    foreign = sorted(p.name for p in out_dir.iterdir() if not _is_part(p))
    if foreign:
        raise ConfigError(
            describe(
                f"sample folder {out_dir} holds files that are not sample parts",
                seen=foreign[:5],
                fix="choose an empty or new folder; only part-*.npz files are replaced",
            )
        )


def write_parts(out_dir: Path, parts: Iterator[dict[str, Array]]) -> int:
    """Write ``parts`` as ``part-NNNNN.npz`` into a fresh folder that replaces ``out_dir`` at the end.

    Nothing is left half-written: files go to a temporary sibling folder first. Returns the number
    of files written.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        written = 0
        for index, part in enumerate(parts):
            with open(temp / f"{PART_PREFIX}{index:05d}.npz", "wb") as handle:
                _savez(handle, **part)
            written += 1
        _swap_in(temp, out_dir)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return written


def save_model(model: ModelProto, path: Path) -> None:
    """Write ``model`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        temp.write_bytes(model.SerializeToString())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _swap_in(temp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        out_dir.rename(old)
    temp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old)


def _is_part(path: Path) -> bool:
    return path.is_file() and path.name.startswith(PART_PREFIX) and path.suffix == ".npz"
