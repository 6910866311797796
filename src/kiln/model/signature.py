"""Checking call inputs against a model signature and its shape profiles.

One function used everywhere a request meets an engine (server decoding, runtime admission, the
engines themselves), so the same mistake gets the same message wherever it is caught.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kiln.errors import InvalidInput, describe
from kiln.types import ShapeProfile, Tensors, TensorSpec, datatype_of


def check_inputs(
    specs: Sequence[TensorSpec],
    inputs: Tensors,
    profiles: Sequence[ShapeProfile] = (),
    *,
    allow_nonfinite: bool = True,
) -> None:
    """Raise ``InvalidInput`` naming every input that is missing, unknown, of the wrong datatype,
    of the wrong shape, outside its profile, or (with ``allow_nonfinite=False``) holding NaN/Inf."""
    problems: list[str] = []
    known = {s.name for s in specs}
    for name in inputs:
        if name not in known:
            problems.append(
                describe(f"unknown input {name!r}", fix=f"the model's inputs are {sorted(known)}")
            )
    by_input = {p.input: p for p in profiles}
    for spec in specs:
        if spec.name not in inputs:
            problems.append(
                describe(
                    f"missing input {spec.name!r}",
                    fix=f"send it as {spec.datatype} with shape {list(spec.shape)}",
                )
            )
            continue
        problems.extend(_check_one(spec, inputs[spec.name], by_input.get(spec.name), allow_nonfinite))
    if problems:
        raise InvalidInput("; ".join(problems))


def _check_one(
    spec: TensorSpec, value: np.ndarray, profile: ShapeProfile | None, allow_nonfinite: bool
) -> list[str]:
    problems: list[str] = []
    if value.dtype != spec.dtype:
        problems.append(
            describe(
                f"input {spec.name!r} has datatype {_name(value.dtype)}",
                fix=f"send {spec.datatype}",
            )
        )
    shape = tuple(int(d) for d in value.shape)
    if not spec.accepts_shape(shape):
        problems.append(
            describe(
                f"input {spec.name!r} has shape {list(shape)}",
                fix=f"expected {list(spec.shape)} (-1 = any size)",
            )
        )
    elif profile is not None and not profile.contains(shape):
        problems.append(
            describe(
                f"input {spec.name!r} shape {list(shape)} is outside the engine's profile",
                fix=f"allowed from {list(profile.min)} to {list(profile.max)}",
            )
        )
    if not allow_nonfinite and value.dtype.kind == "f" and not bool(np.isfinite(value).all()):
        problems.append(describe(f"input {spec.name!r} holds NaN or Inf", fix="send finite values"))
    return problems


def _name(dtype: np.dtype[np.generic]) -> str:
    try:
        return datatype_of(dtype)
    except ValueError:
        return str(dtype)
