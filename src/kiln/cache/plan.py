"""The build decision, in data: given what the store holds for a key, what to do.

``plan_build`` is pure: it looks only at the entries it is given (already read from disk) and
returns a frozen :class:`BuildPlan`. ``kiln.cache.builder.obtain_engine`` acts on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from kiln.cache.entry import WEIGHTS_DIR_LEN, CacheEntry
from kiln.cache.key import EngineKey
from kiln.compile.backends.base import Manifest, Target
from kiln.errors import AccuracyError, BuildError, describe

PlanKind: TypeAlias = Literal["hit", "refit", "build"]


@dataclass(frozen=True)
class BuildPlan:
    """What to do for one (key, weights) request.

    ``hit``: serve ``entry`` (after verifying it). ``refit``: make the engine from ``entry``, a
    sibling with the same key and other weights (refit, else rebuild reusing its calibration).
    ``build``: a full build. ``discard`` lists unreadable entries of the key to delete first.
    """

    kind: PlanKind
    key: EngineKey
    weights_hash: str
    entry: CacheEntry | None = None
    discard: tuple[CacheEntry, ...] = ()


def plan_build(key: EngineKey, weights_hash: str, entries: Sequence[CacheEntry]) -> BuildPlan:
    """Decide hit / refit / build from the entries stored under ``key``.

    An unreadable entry is never a hit nor a refit base: it is listed in ``discard``. Among
    refit candidates the most recently used wins (its weights are likely the closest relatives).
    """
    readable = [e for e in entries if e.manifest is not None and e.key == key.hex]
    discard = tuple(e for e in entries if e.manifest is None or e.key != key.hex)
    exact = [e for e in readable if e.weights_hash == weights_hash]
    if exact:
        return BuildPlan("hit", key, weights_hash, exact[0], discard)
    folder = weights_hash[:WEIGHTS_DIR_LEN]
    siblings = [e for e in readable if e.weights_dir != folder]
    stale = tuple(e for e in readable if e.weights_dir == folder)
    if siblings:
        base = max(siblings, key=lambda e: (e.last_used, e.weights_dir))
        return BuildPlan("refit", key, weights_hash, base, discard + stale)
    return BuildPlan("build", key, weights_hash, None, discard + stale)


def accuracy_drop(accuracy: Mapping[str, object] | None) -> float | None:
    """The report's numeric ``drop``, or ``None`` when there is no report or no number in it."""
    if accuracy is None:
        return None
    drop = accuracy.get("drop")
    if isinstance(drop, bool) or not isinstance(drop, int | float):
        return None
    return float(drop)


def check_accuracy(accuracy: Mapping[str, object] | None, max_drop: float | None, *, what: str) -> None:
    """``AccuracyError`` when the report's ``drop`` exceeds ``max_drop`` (no bound or no drop: pass)."""
    drop = accuracy_drop(accuracy)
    if max_drop is None or drop is None or drop <= max_drop:
        return
    raise AccuracyError(
        describe(
            f"{what}: accuracy drop against the fp32 reference is {drop:.6g}, "
            f"above max_accuracy_drop {max_drop:.6g}",
            seen=dict(accuracy or {}),
            fix="use a higher precision, keep more nodes in fp32, recalibrate, or raise max_accuracy_drop",
        )
    )


REGRESSION_FACTOR = 2.0
"""A weight-only update whose relative L2 error against its fp32 reference is more than this many
times the base engine's is reported as a regression (a warning: the new weights may simply be
harder to quantize; ``max_accuracy_drop`` is what makes an update recalibrate)."""


def regression(
    accuracy: Mapping[str, object] | None,
    baseline: Mapping[str, object] | None,
    factor: float = REGRESSION_FACTOR,
) -> str | None:
    """Why ``accuracy`` (a weight-only update) regressed against ``baseline`` (the engine it was
    updated from), or ``None``: its relative L2 error is over ``factor`` times the baseline's, or
    not finite while the baseline's was. Without both figures there is nothing to compare."""
    new, old = _number(accuracy, "rel_l2_error"), _number(baseline, "rel_l2_error")
    if accuracy is not None and "rel_l2_error" in accuracy and accuracy["rel_l2_error"] is None:
        new = float("inf")  # reports store a non-finite error as null
    if new is None or old is None or new <= factor * old:
        return None
    return f"relative L2 error {new:.4g}, over {factor:g} x the previous engine's {old:.4g}"


def _number(data: Mapping[str, object] | None, key: str) -> float | None:
    value = None if data is None else data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def check_target(manifest: Manifest, target: Target, *, where: str) -> None:
    """``BuildError`` naming both targets when an entry was built for another machine/runtime."""
    try:
        stored = Target.from_json(manifest.target)
    except (KeyError, TypeError, ValueError, AssertionError) as err:
        raise BuildError(describe(f"{where} has an unreadable target", seen=manifest.target)) from err
    if stored != target:
        raise BuildError(
            describe(
                f"{where} was built for target {stored.tag} ({stored.backend} {stored.backend_version}, "
                f"{stored.device_name}), not this one: {target.tag} ({target.backend} "
                f"{target.backend_version}, {target.device_name})",
                fix="build the engine on this machine (it gets its own cache key)",
            )
        )
