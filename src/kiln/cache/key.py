"""The engine cache key: a SHA-256 over an explicit, versioned list of factors.

The key names *what engine comes out*: the model's structure, every spec field that changes the
engine (``BuildSpec.cache_factors()``) and the target it is bound to (``Target.cache_factors()``).
The model's weights are deliberately *not* a factor: engines that differ only in weights share a
key, which is what lets a weight-only retrain reuse (refit) an earlier engine. The weights hash is
stored with each entry instead.

Adding a factor, or changing how one is written, must bump ``KEY_VERSION`` so that old entries
stop matching instead of being served for a spec they were not built for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.compile.backends.base import Target
    from kiln.compile.spec import BuildSpec

KEY_VERSION = 1
"""Version of the factor list below. Bump it whenever a factor is added, removed or re-encoded."""

SHORT_LEN = 12
"""Hex digits shown for a key in tables and accepted as the shortest unambiguous prefix hint."""


def canonical_json(data: object) -> str:
    """``data`` as JSON with sorted keys, no whitespace and no NaN: equal data, equal text.

    Raises ``TypeError`` naming the offending value when something is not plain JSON data.
    """

    def refuse(value: object) -> object:
        raise TypeError(f"cache factor value {value!r} ({type(value).__name__}) is not JSON data")

    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False, default=refuse)


def key_factors(structure_hash: str, spec: BuildSpec, target: Target) -> dict[str, object]:
    """The explicit factor list hashed into an :class:`EngineKey` (weights are not in it)."""
    return {
        "key_version": KEY_VERSION,
        "structure_hash": structure_hash,
        "spec": spec.cache_factors(),
        "target": target.cache_factors(),
    }


@dataclass(frozen=True, slots=True)
class EngineKey:
    """Identifies one engine up to its weights: ``hex`` is the SHA-256 of the canonical factors."""

    hex: str

    def __post_init__(self) -> None:
        if len(self.hex) != 64 or any(c not in "0123456789abcdef" for c in self.hex):
            raise ValueError(f"an engine key is 64 lowercase hex digits, seen {self.hex!r}")

    @property
    def short(self) -> str:
        return self.hex[:SHORT_LEN]

    def __str__(self) -> str:
        return self.hex

    @classmethod
    def of_factors(cls, factors: Mapping[str, object]) -> EngineKey:
        """The key of an already assembled factor mapping (order of keys does not matter)."""
        return cls(hashlib.sha256(canonical_json(factors).encode()).hexdigest())


def engine_key(structure_hash: str, spec: BuildSpec, target: Target) -> EngineKey:
    """The cache key of the engine built from a model of ``structure_hash`` per ``spec`` for ``target``."""
    return EngineKey.of_factors(key_factors(structure_hash, spec, target))
