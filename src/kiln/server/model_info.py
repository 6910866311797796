"""Model metadata, Triton-style model configuration and statistics, as protocol JSON.

Pure functions of the runtime's reports. Both protocols use these dicts: HTTP sends them as they
are, gRPC parses them into its messages, so the two never disagree. Shapes follow Triton: the
metadata keeps the batch axis (-1), the configuration's ``dims`` leave it out when
``max_batch_size > 0``. Statistics use Triton's ``{count, ns}`` pairs, which perf_analyzer reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from kiln.runtime import Duration, ModelConfig, ModelStatus, StatsSnapshot, VersionState
from kiln.types import TensorSpec

PLATFORM = "kiln"
"""What kiln reports as a model's platform and backend (one serving stack for every engine)."""

JSON = dict[str, object]


def ready_versions(status: ModelStatus) -> list[str]:
    """READY versions, oldest load first, each once."""
    seen: dict[str, None] = {}
    for version in status.versions:
        if version.state is VersionState.READY:
            seen[version.version] = None
    return list(seen)


def model_metadata(status: ModelStatus) -> JSON:
    return {
        "name": status.name,
        "versions": ready_versions(status),
        "platform": PLATFORM,
        "inputs": [_tensor_metadata(spec) for spec in status.inputs],
        "outputs": [_tensor_metadata(spec) for spec in status.outputs],
    }


def _tensor_metadata(spec: TensorSpec) -> JSON:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _config_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    return list(spec.shape[1:] if batched else spec.shape)


def model_config(
    status: ModelStatus, config: ModelConfig, *, priority_levels: int, default_priority_level: int
) -> JSON:
    """The model's configuration in Triton's JSON form (``config.pbtxt`` fields)."""
    batched = status.max_batch_size > 0
    result: JSON = {
        "name": status.name,
        "platform": PLATFORM,
        "backend": PLATFORM,
        "max_batch_size": status.max_batch_size,
        "input": [
            {"name": s.name, "data_type": _config_type(s.datatype), "dims": _dims(s, batched)}
            for s in status.inputs
        ],
        "output": [
            {"name": s.name, "data_type": _config_type(s.datatype), "dims": _dims(s, batched)}
            for s in status.outputs
        ],
        "instance_group": [{"name": f"{status.name}_0", "kind": "KIND_AUTO", "count": config.num_instances}],
    }
    if batched:
        batching = config.batching
        result["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "priority_levels": priority_levels,
            "default_priority_level": default_priority_level,
        }
        # Triton's configuration has no such field; its free-form ``parameters`` map carries it.
        result["parameters"] = {
            "dispatch_when_idle": {"string_value": "true" if batching.dispatch_when_idle else "false"}
        }
    return result


def _duration(value: Duration) -> JSON:
    return {"count": value.count, "ns": value.ns}


def model_statistics(snapshot: StatsSnapshot) -> JSON:
    """One version's statistics, as Triton's statistics extension reports them."""
    zero = Duration()
    return {
        "name": snapshot.model,
        "version": snapshot.version,
        "last_inference": snapshot.last_inference_ms,
        "inference_count": snapshot.inference_count,
        "execution_count": snapshot.execution_count,
        "inference_stats": {
            "success": _duration(snapshot.success),
            "fail": _duration(snapshot.fail),
            "queue": _duration(snapshot.queue),
            "compute_input": _duration(snapshot.compute_input),
            "compute_infer": _duration(snapshot.compute_infer),
            "compute_output": _duration(snapshot.compute_output),
            "cache_hit": _duration(zero),
            "cache_miss": _duration(zero),
        },
        "batch_stats": [
            {
                "batch_size": rows,
                "compute_input": _duration(Duration(runs.count, 0)),
                "compute_infer": _duration(runs),
                "compute_output": _duration(Duration(runs.count, 0)),
            }
            for rows, runs in snapshot.batch_sizes.items()
        ],
        "memory_usage": [],
    }


def statistics_response(entries: Iterable[JSON]) -> JSON:
    return {"model_stats": list(entries)}
