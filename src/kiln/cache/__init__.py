"""The engine cache: content-addressed store, build orchestration, garbage collection.

See ``docs/cache.md``. Entry points: :func:`obtain_engine` (hit / refit / calibration reuse /
build), :class:`EngineStore`, :func:`engine_key`, :func:`collect_garbage`, :func:`remove_entries`.
"""

from kiln.cache.builder import BuildBackend, BuildReport, Verifier, obtain_engine
from kiln.cache.entry import CacheEntry
from kiln.cache.gc import EvictionPlan, GcReport, collect_garbage, parse_byte_size, plan_eviction
from kiln.cache.key import KEY_VERSION, EngineKey, engine_key, key_factors
from kiln.cache.plan import BuildPlan, plan_build
from kiln.cache.remove import match_prefix, remove_entries
from kiln.cache.store import CacheBusy, EngineStore, default_cache_dir

__all__ = [
    "KEY_VERSION",
    "BuildBackend",
    "BuildPlan",
    "BuildReport",
    "CacheBusy",
    "CacheEntry",
    "EngineKey",
    "EngineStore",
    "EvictionPlan",
    "GcReport",
    "Verifier",
    "collect_garbage",
    "default_cache_dir",
    "engine_key",
    "key_factors",
    "match_prefix",
    "obtain_engine",
    "parse_byte_size",
    "plan_build",
    "plan_eviction",
    "remove_entries",
]
