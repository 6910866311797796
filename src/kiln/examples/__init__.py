"""Example models and their traffic, generated reproducibly: no downloads, no torch.

Three models a CTR/ranking/vision shop would serve, built with ``onnx.helper`` and numpy:

* ``ctr``: DLRM-style click model (26 embedding tables + 13 dense features -> probability),
* ``cnn``: ResNet-18-style classifier (3x224x224 image -> 32 class logits; images come in classes),
* ``ranker``: small BERT-style encoder (128 tokens + mask -> relevance score),

each in a ``full`` size (what the name says) and a ``tiny`` size (same graph shape, small dims, for
tests). The same (name, size, seed) always gives the same model bytes; another seed gives the same
graph with other weights (a weight-only retrain). Sample sets follow kiln's sample-folder format
(:mod:`kiln.compile.data`): ``.npz`` files with one array per model input plus ``_label`` and
``_key`` where the example has them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeAlias, get_args

import numpy as np
import onnx

from kiln.compile.spec import Task
from kiln.errors import ConfigError, describe
from kiln.examples import _samples, cnn, ctr, ranker
from kiln.examples._graph import STREAM_CALIBRATION, STREAM_VALIDATION
from kiln.types import Array, ShapeProfile, TensorSpec

Size: TypeAlias = Literal["full", "tiny"]
SampleKind: TypeAlias = Literal["calibration", "validation"]
SIZES: tuple[Size, ...] = get_args(Size)
SAMPLE_KINDS: tuple[SampleKind, ...] = get_args(SampleKind)
_STREAMS = {"calibration": STREAM_CALIBRATION, "validation": STREAM_VALIDATION}


@dataclass(frozen=True, slots=True)
class ExampleSpec:
    """One example model: what it is, its tensors per size, and how to serve and check it.

    Fields:
        name / task / summary: registry key, the accuracy task (``kiln.compile.spec.Task``), one line.
        input_names / output_names: tensor names, the same for every size.
        batch_sizes: preferred batch sizes (profile buckets); ``opt_batch_size`` is the one to tune for.
        max_batch_size: the largest batch it is meant to be served with.
        num_calibration / num_validation: sample counts :func:`generate_all` writes.
        samples_per_file: samples per ``.npz`` file by default.
        labelled: which sample kinds carry ``_label`` by default (see :attr:`can_label`).
        has_keys: whether samples carry ``_key`` (a stratification key).
    """

    name: str
    task: Task
    summary: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    opt_batch_size: int
    max_batch_size: int
    num_calibration: int
    num_validation: int
    samples_per_file: int
    labelled: tuple[SampleKind, ...]
    has_keys: bool

    @property
    def can_label(self) -> bool:
        """Whether samples can carry ``_label`` at all: ``ctr`` (a click drawn as
        Bernoulli(model probability)) and ``cnn`` (the fp32 model's top-1) can, ``ranker`` not."""
        return _impl(self.name).labels is not None

    def inputs(self, size: Size = "full") -> tuple[TensorSpec, ...]:
        """Input tensors at ``size``; the batch axis is ``-1``."""
        return _impl(self.name).signature(_check_size(size))[0]

    def outputs(self, size: Size = "full") -> tuple[TensorSpec, ...]:
        return _impl(self.name).signature(_check_size(size))[1]

    def profiles(self, size: Size = "full") -> tuple[ShapeProfile, ...]:
        """One shape profile per input: batch 1 / ``opt_batch_size`` / ``max_batch_size``."""

        def at(batch: int, spec: TensorSpec) -> tuple[int, ...]:
            return (batch, *spec.shape[1:])

        return tuple(
            ShapeProfile(s.name, at(1, s), at(self.opt_batch_size, s), at(self.max_batch_size, s))
            for s in self.inputs(size)
        )


@dataclass(frozen=True, slots=True)
class GeneratedExample:
    """Where :func:`generate_all` put one example's model and sample folders."""

    name: str
    model: Path
    calibration: Path
    validation: Path


@dataclass(frozen=True, slots=True)
class _Impl:
    signature: Callable[[str], tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]]
    build: Callable[[str, int], onnx.ModelProto]
    sample: _samples.SampleFn
    labels: _samples.LabelFn | None
    block_size: int


_IMPLS = {
    "ctr": _Impl(ctr.signature, ctr.build, ctr.sample_block, ctr.labels, 1024),
    "cnn": _Impl(cnn.signature, cnn.build, cnn.sample_block, cnn.labels, 8),
    "ranker": _Impl(ranker.signature, ranker.build, ranker.sample_block, None, 128),
}

EXAMPLES: Mapping[str, ExampleSpec] = MappingProxyType(
    {
        "ctr": ExampleSpec(
            name="ctr",
            task="ctr",
            summary="DLRM-style click-through-rate model: 26 embedding tables + 13 dense features",
            input_names=("dense", "sparse"),
            output_names=("prob",),
            batch_sizes=(1, 16, 64, 256),
            opt_batch_size=64,
            max_batch_size=256,
            num_calibration=4096,
            num_validation=8192,
            samples_per_file=1024,
            labelled=("calibration", "validation"),
            has_keys=True,
        ),
        "cnn": ExampleSpec(
            name="cnn",
            task="classifier",
            summary="ResNet-18-style image classifier, BatchNorm folded into the convolutions",
            input_names=("image",),
            output_names=("logits",),
            batch_sizes=(1, 4, 8, 16, 32),
            opt_batch_size=8,
            max_batch_size=32,
            num_calibration=64,
            num_validation=128,
            samples_per_file=16,
            labelled=(),
            has_keys=False,
        ),
        "ranker": ExampleSpec(
            name="ranker",
            task="ranker",
            summary="Small BERT-style encoder ranker: 4 layers, hidden 256, 128 tokens",
            input_names=("input_ids", "attention_mask"),
            output_names=("score",),
            batch_sizes=(1, 8, 16, 32, 64),
            opt_batch_size=16,
            max_batch_size=64,
            num_calibration=256,
            num_validation=512,
            samples_per_file=128,
            labelled=(),
            has_keys=True,
        ),
    }
)


def make_model(name: str, *, size: Size = "full", seed: int = 0) -> onnx.ModelProto:
    """The example model ``name`` in memory (fp32, opset 17, dynamic ``batch`` axis)."""
    return _impl(name).build(_check_size(size), _check_seed(seed))


def build_model(name: str, path: Path | str, *, size: Size = "full", seed: int = 0) -> Path:
    """Write the example model ``name`` to ``path`` (atomically) and return the path.

    The same (name, size, seed) gives the same bytes; another ``seed`` the same graph structure
    with other weights. ``ConfigError`` on an unknown name or size, a negative seed, or a
    ``path`` that is a folder.
    """
    target = Path(path)
    if target.is_dir():
        raise ConfigError(describe("model path is a folder", seen=str(target), fix="give a file path"))
    _samples.save_model(make_model(name, size=size, seed=seed), target)
    return target


def make_samples(
    name: str,
    count: int,
    *,
    kind: SampleKind = "calibration",
    size: Size = "full",
    seed: int = 0,
    labels: bool | None = None,
    model: Path | str | None = None,
) -> dict[str, Array]:
    """``count`` samples in memory: one array per input, plus ``_key``/``_label`` if the example has
    them (see :func:`write_samples` for ``labels`` and ``model``)."""
    blocks = list(_blocks(name, count, kind=kind, size=size, seed=seed, labels=labels, model=model))
    return _samples.concatenate(blocks)


def write_samples(
    name: str,
    out_dir: Path | str,
    *,
    count: int,
    kind: SampleKind = "calibration",
    size: Size = "full",
    seed: int = 0,
    per_file: int | None = None,
    labels: bool | None = None,
    model: Path | str | None = None,
) -> Path:
    """Write ``count`` samples as ``part-NNNNN.npz`` files into ``out_dir`` and return it.

    Calibration and validation sets come from different random streams; sample ``i`` is the same
    whatever ``count`` and ``per_file`` are. ``out_dir`` must be absent, empty, or an earlier
    sample folder (replaced whole, never half-written). ``labels`` (default: the example's
    ``labelled`` kinds) adds ``_label``, computed with ONNX Runtime from ``model`` (default: the
    example model of the same size and seed, built in memory).
    """
    spec = get_example(name)
    files = per_file if per_file is not None else spec.samples_per_file
    if files < 1:
        raise ConfigError(describe("per_file must be at least 1", seen=files, fix="pass per_file >= 1"))
    target = Path(out_dir)
    _samples.check_output_dir(target)
    blocks = _blocks(name, count, kind=kind, size=size, seed=seed, labels=labels, model=model)
    _samples.write_parts(target, _samples.rechunk(blocks, files))
    return target


def generate_all(
    out_dir: Path | str, *, size: Size = "full", seed: int = 0, names: Sequence[str] | None = None
) -> dict[str, GeneratedExample]:
    """Write ``<out>/<name>/model.onnx``, ``calibration/`` and ``validation/`` for each example
    (all of them unless ``names`` is given), with each example's default sample counts."""
    root = Path(out_dir)
    specs = [get_example(name) for name in (names if names is not None else EXAMPLES)]
    _check_size(size)
    _check_seed(seed)
    for spec in specs:  # refuse bad targets before writing anything
        for kind in SAMPLE_KINDS:
            _samples.check_output_dir(root / spec.name / kind)
        if (root / spec.name / "model.onnx").is_dir():
            raise ConfigError(describe("model path is a folder", seen=str(root / spec.name / "model.onnx")))
    result: dict[str, GeneratedExample] = {}
    for spec in specs:
        folder = root / spec.name
        model = build_model(spec.name, folder / "model.onnx", size=size, seed=seed)
        sets = [
            write_samples(spec.name, folder / kind, count=n, kind=kind, size=size, seed=seed, model=model)
            for kind, n in _default_counts(spec)
        ]
        result[spec.name] = GeneratedExample(spec.name, model, *sets)
    return result


def _default_counts(spec: ExampleSpec) -> tuple[tuple[SampleKind, int], ...]:
    return (("calibration", spec.num_calibration), ("validation", spec.num_validation))


def get_example(name: str) -> ExampleSpec:
    """The registry entry for ``name``; ``ConfigError`` listing the known names otherwise."""
    try:
        return EXAMPLES[name]
    except KeyError:
        known = ", ".join(EXAMPLES)
        raise ConfigError(describe("unknown example model", seen=name, fix=f"use one of {known}")) from None


def _blocks(
    name: str,
    count: int,
    *,
    kind: str,
    size: str,
    seed: int,
    labels: bool | None,
    model: Path | str | None,
) -> Iterator[dict[str, Array]]:
    spec, impl = get_example(name), _impl(name)
    if kind not in _STREAMS:
        raise ConfigError(describe("unknown sample kind", seen=kind, fix=f"use one of {', '.join(_STREAMS)}"))
    if count < 1:
        raise ConfigError(describe("sample count must be at least 1", seen=count, fix="pass count >= 1"))
    plan = _samples.SamplePlan(_check_size(size), _check_seed(seed), _STREAMS[kind], count, impl.block_size)
    if labels and impl.labels is None:
        raise ConfigError(
            describe(f"example {name!r} has no labels", seen=f"labels={labels}", fix="leave labels unset")
        )
    if impl.labels is None or not (kind in spec.labelled if labels is None else labels):
        return _samples.iter_blocks(plan, impl.sample)
    graph = onnx.load(str(model)) if model is not None else impl.build(plan.size, plan.seed)
    return _samples.iter_blocks(plan, impl.sample, labels=impl.labels, model=graph)


def _impl(name: str) -> _Impl:
    get_example(name)
    return _IMPLS[name]


def _check_size(size: str) -> str:
    if size not in SIZES:
        raise ConfigError(describe("unknown example size", seen=size, fix=f"use one of {', '.join(SIZES)}"))
    return size


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(describe("seed must be a non-negative integer", seen=seed, fix="pass e.g. seed=0"))
    return int(seed)


__all__ = [
    "EXAMPLES",
    "SAMPLE_KINDS",
    "SIZES",
    "ExampleSpec",
    "GeneratedExample",
    "SampleKind",
    "Size",
    "build_model",
    "generate_all",
    "get_example",
    "make_model",
    "make_samples",
    "write_samples",
]
