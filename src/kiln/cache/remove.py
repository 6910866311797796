"""Removing entries by key prefix (``kiln cache rm``)."""

from __future__ import annotations

from collections.abc import Sequence

from kiln.cache.entry import CacheEntry, is_hex
from kiln.cache.key import SHORT_LEN
from kiln.cache.store import EngineStore
from kiln.errors import ConfigError, describe


def match_prefix(entries: Sequence[CacheEntry], prefix: str) -> tuple[CacheEntry, ...]:
    """The entries ``prefix`` names: ``KEY`` (every weights variant of one key) or ``KEY/WEIGHTS``
    (one entry), each part a hex prefix. ``ConfigError`` when it is malformed, names nothing, or
    names entries of more than one key (give more digits)."""
    key_part, _, weights_part = prefix.strip().lower().partition("/")
    if not is_hex(key_part) or (weights_part and not is_hex(weights_part)):
        raise ConfigError(
            describe(
                "not a cache entry prefix",
                seen=prefix,
                fix="give hex digits of a key, optionally /hex digits of the weights, "
                "as `kiln cache ls` shows them",
            )
        )
    found = tuple(e for e in entries if e.key.startswith(key_part) and e.weights_dir.startswith(weights_part))
    if not found:
        raise ConfigError(
            describe("no cache entry matches", seen=prefix, fix="run `kiln cache ls` to see the keys")
        )
    keys = sorted({e.key[:SHORT_LEN] for e in found})
    if len(keys) > 1:
        raise ConfigError(
            describe(
                f"prefix is ambiguous: it matches {len(keys)} keys ({', '.join(keys)})",
                seen=prefix,
                fix="give more digits of the key",
            )
        )
    return found


def remove_entries(
    store: EngineStore, prefix: str, *, lock_timeout_s: float = 30.0
) -> tuple[CacheEntry, ...]:
    """Delete the entries ``prefix`` names (see :func:`match_prefix`), under their key's lock.

    Raises ``ConfigError`` for a bad/unknown/ambiguous prefix, ``CacheBusy`` when a builder holds the
    key longer than ``lock_timeout_s``.
    """
    found = match_prefix(store.list_entries(), prefix)
    with store.lock(found[0].key, timeout_s=lock_timeout_s):
        current = {e.path for e in store.entries(found[0].key)}
        gone = tuple(e for e in found if e.path in current)
        for entry in gone:
            store.remove(entry)
    return gone
