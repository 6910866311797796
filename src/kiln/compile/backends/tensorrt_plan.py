"""What a TensorRT build is asked for, decided in pure data: options, optimization profiles, target.

TensorRT 10/11 networks are strongly typed: precision comes from the ONNX file itself, which kiln's
precision passes produce (fp16/bf16 conversion, INT8 as QDQ nodes). What remains for the builder:

| option (``BuildSpec.backend_options``) | values | default |
|---|---|---|
| ``profiles`` | optimization profiles to build, one per concurrent instance | ``1`` |
| ``refit`` | ``on`` (refittable engine: weight-only updates refit instead of rebuilding), ``off`` | ``on`` |
| ``opt_level`` | builder optimization level ``0``..``5`` | ``3`` |

Every profile gets the same shapes (min/opt/max per input, from the spec's profiles; an input
without one takes batch ``1 / max_batch_size / max_batch_size`` on a variable first axis).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kiln.compile.backends.base import Target
from kiln.errors import BuildError, describe
from kiln.types import ShapeProfile, TensorSpec

BACKEND_NAME = "tensorrt"
MAX_PROFILES = 16
BINDING_FIELDS: tuple[str, ...] = ("backend", "backend_version", "device_kind", "device_name", "arch")
BINDING_DETAILS: tuple[str, ...] = ("cuda",)


@dataclass(frozen=True, slots=True)
class TrtOptions:
    profiles: int = 1
    refit: bool = True
    opt_level: int = 3

    def to_json(self) -> dict[str, object]:
        return {"profiles": self.profiles, "refit": self.refit, "opt_level": self.opt_level}


def parse_options(options: Mapping[str, str]) -> TrtOptions:
    """``TrtOptions`` from backend options; ``BuildError`` naming a bad name or value."""
    unknown = sorted(set(options) - {"profiles", "refit", "opt_level"})
    if unknown:
        raise BuildError(
            describe("unknown tensorrt backend option", seen=unknown, fix="use profiles, refit, opt_level")
        )
    try:
        profiles = int(options.get("profiles", "1"))
        level = int(options.get("opt_level", "3"))
    except ValueError:
        raise BuildError(
            describe("tensorrt options profiles and opt_level are integers", seen=dict(options))
        ) from None
    refit = options.get("refit", "on")
    if not 1 <= profiles <= MAX_PROFILES or not 0 <= level <= 5 or refit not in ("on", "off"):
        raise BuildError(
            describe(
                "tensorrt options out of range",
                seen=dict(options),
                fix=f"profiles 1..{MAX_PROFILES}, opt_level 0..5, refit on|off",
            )
        )
    return TrtOptions(profiles=profiles, refit=refit == "on", opt_level=level)


def input_ranges(
    inputs: Sequence[TensorSpec], profiles: Sequence[ShapeProfile], max_batch_size: int
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape per input for one optimization profile (see the module docstring)."""
    by_input = {p.input: p for p in profiles}
    ranges = {}
    for spec in inputs:
        profile = by_input.get(spec.name)
        if profile is not None:
            ranges[spec.name] = (profile.min, profile.opt, profile.max)
            continue
        dims = list(spec.shape)
        if any(d < 0 for d in dims[1:]):
            raise BuildError(
                describe(
                    f"input {spec.name!r} varies past the batch axis and has no profile",
                    seen=list(spec.shape),
                    fix="give a shape profile (min/opt/max) for it in the build spec",
                )
            )
        if dims and dims[0] < 0:
            low, high = (1, *dims[1:]), (max_batch_size, *dims[1:])
            ranges[spec.name] = (low, high, high)
        else:
            fixed = tuple(dims)
            ranges[spec.name] = (fixed, fixed, fixed)
    return ranges


def trt_target(
    *, version: str, device_name: str, capability: tuple[int, int], cuda: str, driver: str
) -> Target:
    return Target(
        backend=BACKEND_NAME,
        backend_version=version,
        device_kind="cuda",
        device_name=device_name,
        arch=f"sm{capability[0]}{capability[1]}",
        details=(("cuda", cuda), ("driver", driver)),
    )


def check_target(built: Target, here: Target) -> None:
    """``BuildError`` unless the engine's TensorRT version and GPU match this machine's."""
    mismatched = [f for f in BINDING_FIELDS if getattr(built, f) != getattr(here, f)]
    built_details, here_details = dict(built.details), dict(here.details)
    mismatched += [k for k in BINDING_DETAILS if built_details.get(k) != here_details.get(k)]
    if mismatched:
        raise BuildError(
            describe(
                f"TensorRT engine was built with TensorRT {built.backend_version} for {built.device_name} "
                f"({built.arch}) but this machine has TensorRT {here.backend_version} on {here.device_name} "
                f"({here.arch}) (differs in {', '.join(mismatched)})",
                fix="rebuild the engine here (the engine cache does this on a miss)",
            )
        )


def timing_cache_name(target: Target) -> str:
    """File name of the shared timing cache for ``target`` (valid for one TensorRT version and GPU)."""
    return f"timing-trt{target.backend_version}-{target.arch}.cache".replace(" ", "_")
