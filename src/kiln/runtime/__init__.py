"""kiln's serving core: resident engines with execution instances, double-buffered hot swap,
dynamic batching, retries with instance rebuild, CPU fallback, fault injection and stats.

No HTTP here: the server puts KServe v2 in front of :class:`Runtime`. See ``docs/runtime.md``.
"""

from kiln.runtime.checks import GoldenSet
from kiln.runtime.config import BatchingConfig, FallbackConfig, ModelConfig, RetryConfig, VersionPolicy
from kiln.runtime.fallback import Health, Route, RoutingChange
from kiln.runtime.faults import FaultCounts, FaultSpec
from kiln.runtime.lifecycle import LifecycleError, VersionState, VersionStatus
from kiln.runtime.loader import EngineSource, VersionHandle
from kiln.runtime.results import InferResult, ModelStatus, RuntimeStatus
from kiln.runtime.runtime import Runtime
from kiln.runtime.slot import ModelSlot
from kiln.runtime.stats import Counter, Duration, HistogramSnapshot, ModelStats, StatsSnapshot

__all__ = [
    "BatchingConfig",
    "Counter",
    "Duration",
    "EngineSource",
    "FallbackConfig",
    "FaultCounts",
    "FaultSpec",
    "GoldenSet",
    "Health",
    "HistogramSnapshot",
    "InferResult",
    "LifecycleError",
    "ModelConfig",
    "ModelSlot",
    "ModelStats",
    "ModelStatus",
    "RetryConfig",
    "Route",
    "RoutingChange",
    "Runtime",
    "RuntimeStatus",
    "StatsSnapshot",
    "VersionHandle",
    "VersionPolicy",
    "VersionState",
    "VersionStatus",
]
