"""The sanity check a new version passes before it may serve: warm-up inputs, output checks
against the signature, NaN/Inf, and an optional golden set compared within a tolerance.

Pure functions returning the problems found (empty = fine); the loader runs the engine and fails
the version with these messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kiln.errors import ConfigError, describe
from kiln.types import Array, ShapeProfile, Tensors, TensorSpec, datatype_of


@dataclass(frozen=True)
class GoldenSet:
    """Inputs and the outputs a new version must reproduce before it is made active.

    ``outputs`` may name a subset of the model's outputs; each is compared elementwise with
    ``|got - want| <= atol + rtol * |want|``.
    """

    inputs: Tensors
    outputs: Tensors
    rtol: float = 1e-4
    atol: float = 1e-5

    def __post_init__(self) -> None:
        if self.rtol < 0 or self.atol < 0:
            raise ConfigError(describe("golden tolerances must be >= 0", seen=(self.rtol, self.atol)))
        if not self.outputs:
            raise ConfigError(describe("a golden set needs expected outputs", fix="give at least one"))


def is_batchable(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """True when every input and output has a variable first (batch) axis."""
    return all(spec.rank > 0 and spec.shape[0] == -1 for spec in (*inputs, *outputs))


def warmup_batch(
    specs: Sequence[TensorSpec], profiles: Sequence[ShapeProfile], rows: int
) -> dict[str, Array]:
    """Zero inputs with ``rows`` rows; other variable dims take the profile's ``opt`` (else 1)."""
    by_input = {p.input: p for p in profiles}
    feed: dict[str, Array] = {}
    for spec in specs:
        profile = by_input.get(spec.name)
        dims = [
            (profile.opt[i] if profile is not None else 1) if d == -1 else d for i, d in enumerate(spec.shape)
        ]
        if spec.rank > 0 and spec.shape[0] == -1:
            dims[0] = rows
        if spec.datatype == "BYTES":
            feed[spec.name] = np.full(dims, b"", dtype=object)
        else:
            feed[spec.name] = np.zeros(dims, dtype=spec.dtype)
    return feed


def check_outputs(
    specs: Sequence[TensorSpec], outputs: Mapping[str, Array], rows: int | None, *, check_finite: bool
) -> list[str]:
    """Problems of one run's outputs against the declared outputs (names, datatypes, shapes, the
    batch axis holding ``rows`` rows when given, and with ``check_finite`` NaN/Inf)."""
    problems: list[str] = []
    declared = {s.name for s in specs}
    problems += [f"unexpected output {name!r}" for name in outputs if name not in declared]
    for spec in specs:
        value = outputs.get(spec.name)
        if value is None:
            problems.append(f"output {spec.name!r} is missing")
            continue
        shape = tuple(int(d) for d in value.shape)
        if value.dtype != spec.dtype:
            problems.append(f"output {spec.name!r} has datatype {_name(value)}, declared {spec.datatype}")
        if not spec.accepts_shape(shape):
            problems.append(f"output {spec.name!r} has shape {list(shape)}, declared {list(spec.shape)}")
        elif rows is not None and shape[0] != rows:
            problems.append(f"output {spec.name!r} has {shape[0]} rows for a batch of {rows}")
        if check_finite and value.dtype.kind in "fc" and not bool(np.isfinite(value).all()):
            problems.append(f"output {spec.name!r} holds NaN or Inf")
    return problems


def compare_golden(golden: GoldenSet, outputs: Mapping[str, Array]) -> list[str]:
    """Problems of ``outputs`` against the golden set's expected outputs."""
    problems: list[str] = []
    for name, want in golden.outputs.items():
        got = outputs.get(name)
        if got is None:
            problems.append(f"golden output {name!r} is missing")
            continue
        if got.shape != want.shape:
            problems.append(
                f"golden output {name!r} has shape {list(got.shape)}, expected {list(want.shape)}"
            )
            continue
        close = np.isclose(got, want, rtol=golden.rtol, atol=golden.atol)
        if not bool(close.all()):
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            problems.append(
                f"golden output {name!r} differs in {int((~close).sum())} of {close.size} values "
                f"(max abs error {float(np.nanmax(diff)) if diff.size else 0.0:.3g}; "
                f"rtol {golden.rtol}, atol {golden.atol})"
            )
    return problems


def _name(value: Array) -> str:
    try:
        return datatype_of(value.dtype)
    except ValueError:
        return str(value.dtype)
