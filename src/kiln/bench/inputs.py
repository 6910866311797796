"""Request payloads for a benchmark: random tensors from a model's signature, or rows of samples.

Payloads are made once, before the load starts (making them per request would measure numpy), and
requests cycle through them. Random payloads are finite: floats are standard normal, integers
uniform in ``int_range`` (keep ids inside the model's tables, e.g. ``(0, 1000)``), booleans fair
coins. The batch axis (the first ``-1`` dimension) takes ``batch_size``; other variable dimensions
take ``free_dim``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiln.compile.data import SampleSet, check_samples, load_samples
from kiln.errors import ConfigError, describe
from kiln.types import Array, TensorSpec

Payload = Mapping[str, Array]


@dataclass(frozen=True)
class RequestPool:
    """The payloads requests cycle through: request ``i`` sends ``payloads[i % len(payloads)]``."""

    payloads: tuple[Payload, ...]

    def __post_init__(self) -> None:
        if not self.payloads:
            raise ConfigError(describe("a request pool needs at least one payload", fix="give samples"))

    def __len__(self) -> int:
        return len(self.payloads)

    def __getitem__(self, index: int) -> Payload:
        return self.payloads[index % len(self.payloads)]

    @classmethod
    def random(
        cls,
        specs: Sequence[TensorSpec],
        *,
        batch_size: int = 1,
        count: int = 64,
        seed: int = 0,
        int_range: tuple[int, int] = (0, 100),
        free_dim: int = 1,
    ) -> RequestPool:
        """``count`` random payloads of ``batch_size`` rows fitting ``specs``."""
        low, high = int_range
        if not low < high:
            raise ConfigError(describe("int_range needs low < high", seen=int_range, fix="e.g. 0:1000"))
        if batch_size < 1 or count < 1 or free_dim < 1:
            raise ConfigError(
                describe("batch_size, count and free_dim must be >= 1", seen=(batch_size, count, free_dim))
            )
        rng = np.random.default_rng(seed)
        payloads = tuple(
            {spec.name: _random_tensor(rng, spec, batch_size, free_dim, low=low, high=high) for spec in specs}
            for _ in range(count)
        )
        return cls(payloads)

    @classmethod
    def from_samples(
        cls, samples: SampleSet | Path | str, specs: Sequence[TensorSpec], *, batch_size: int = 1
    ) -> RequestPool:
        """Payloads of ``batch_size`` consecutive rows from a sample set, a ``.npz`` file or a folder
        of them (one array per input, sample index on axis 0). ``ConfigError`` naming each input
        that does not fit ``specs``, or when there are fewer samples than ``batch_size``."""
        if batch_size < 1:
            raise ConfigError(describe("batch_size must be >= 1", seen=batch_size))
        samples = samples if isinstance(samples, SampleSet) else load_samples(Path(samples))
        check_samples(samples, specs, what="benchmark")
        if len(samples) < batch_size:
            raise ConfigError(
                describe(
                    f"the samples hold {len(samples)} rows, fewer than one request of {batch_size}",
                    fix="give more samples or a smaller batch size",
                )
            )
        names = [s.name for s in specs]
        whole = len(samples) // batch_size * batch_size
        payloads = tuple(
            {name: np.ascontiguousarray(samples.inputs[name][start : start + batch_size]) for name in names}
            for start in range(0, whole, batch_size)
        )
        return cls(payloads)


def _shape(spec: TensorSpec, batch_size: int, free_dim: int) -> tuple[int, ...]:
    dims = list(spec.shape)
    for axis, dim in enumerate(dims):
        if dim == -1:
            dims[axis] = batch_size if axis == 0 else free_dim
    return tuple(dims)


def _random_tensor(
    rng: np.random.Generator, spec: TensorSpec, batch_size: int, free_dim: int, *, low: int, high: int
) -> Array:
    shape = _shape(spec, batch_size, free_dim)
    dtype = spec.dtype
    if spec.datatype == "BYTES":
        raise ConfigError(
            describe(
                f"input {spec.name!r} is BYTES; random payloads are numeric only",
                fix="pass --inputs with samples",
            )
        )
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(np.bool_)
    info = np.iinfo(dtype.type)  # type: ignore[type-var]
    lo, hi = max(low, int(info.min)), min(high, int(info.max) + 1)
    if not lo < hi:
        raise ConfigError(
            describe(
                f"int_range {low}:{high} holds no {spec.datatype} value for input {spec.name!r}",
                fix=f"use a range inside {info.min}..{info.max}",
            )
        )
    return rng.integers(lo, hi, shape, dtype=np.int64).astype(dtype)


def parse_int_range(text: str) -> tuple[int, int]:
    """``"0:1000"`` -> ``(0, 1000)`` (high excluded); ``ConfigError`` otherwise."""
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise ConfigError(
            describe("bad integer range", seen=text, fix="write LOW:HIGH, e.g. 0:1000")
        ) from None
    if not low < high:
        raise ConfigError(describe("integer range needs LOW < HIGH", seen=text, fix="e.g. 0:1000"))
    return low, high
