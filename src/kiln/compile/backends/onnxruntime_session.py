"""ONNX Runtime session options for building and for serving, and the thread policy.

Thread policy (measured on a 2-core AVX-512 machine, ONNX Runtime 1.31):

- A small model is faster on one intra-op thread: a CTR model doing ~0.1 M multiply-accumulates
  (MACs) per sample ran 0.031 ms at batch 1 with one thread vs 0.047 ms with two, and was still
  faster single-threaded at batch 32. Thread hand-off costs more than the work it splits.
- BERT/CNN-sized work (hundreds of M to G MACs per sample) scales ~2x from one to two threads.
- So a session uses one thread when the work per call (MACs per sample x the batch the engine is
  built for) is under ``PARALLEL_MIN_MACS``, else every CPU this process may use, split among the
  instances that run at once (``LoadOptions.num_instances``): two instances of two threads each on
  two cores would oversubscribe them, two of one thread each run side by side.

Spinning: ONNX Runtime's pool threads spin-wait for work by default. That buys a little latency on
an idle machine, but when another process (the HTTP front end, a neighbour) wants the core, the
spinning workers stall it and the run: p99 spikes of 4 ms on a 0.06 ms model. Measured here on a
4-layer 1024-wide MLP with two threads at batch 32: p99 5.8 ms spinning vs 1.9 ms without, median
about equal (1.46 vs 1.40 ms); without spinning a batch-1 call is slower (0.21 vs 0.10 ms), which
is why small work stays on one thread, where spinning does not arise. kiln turns spinning off
unless ``LoadOptions.allow_spinning`` asks for it: an int8 BERT-style ranker at batch 32 ran
18 % faster with it (124 vs 147 ms), on two cores it had mostly to itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kiln.compile.backends.base import LoadOptions

if TYPE_CHECKING:
    import onnxruntime

    from kiln.compile.spec import BuildSpec

PARALLEL_MIN_MACS = 10_000_000
"""Work per call (MACs) from which a session uses every CPU instead of one thread."""

SMALL_ENGINE_BYTES = 4 * 1024**2
"""Without a stored work estimate, engine files up to this size run single-threaded."""

EXTERNAL_DATA_MIN_BYTES = 1024
"""In an engine saved with external data, initializers from this size go to the data file."""

_QUIET = 3
"""ONNX Runtime log severity for kiln's sessions: errors only (kiln logs what it needs itself)."""


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    """How many threads a serving session uses, and why (shown in logs and ``kiln`` output)."""

    intra_op_threads: int
    inter_op_threads: int
    allow_spinning: bool
    reason: str


def batch_hint(spec: BuildSpec) -> int:
    """The batch size the engine is built for: the largest profile ``opt`` batch, else the max."""
    opts = [p.opt[0] for p in spec.profiles if p.opt]
    return max(opts) if opts else spec.max_batch_size


def plan_threads(
    options: LoadOptions, *, macs_per_call: int | None, engine_bytes: int, cpus: int
) -> ThreadPlan:
    """Choose intra-op threads per run: ``options.intra_op_threads`` when set (> 0), else from the
    work, each instance getting its share of the CPUs (``cpus // options.num_instances``, at least 1).

    ``macs_per_call`` is the build-time work estimate at the engine's batch size (``None`` when
    the artifact has none: then the engine file size decides).
    """
    inter = max(options.inter_op_threads, 1)
    spin = bool(options.allow_spinning)
    cpus = max(cpus, 1)
    if options.intra_op_threads > 0:
        return ThreadPlan(options.intra_op_threads, inter, spin, "set by load options")
    instances = max(options.num_instances, 1)
    share = max(cpus // instances, 1)
    if macs_per_call is not None:
        if macs_per_call < PARALLEL_MIN_MACS or share == 1:
            why = f"small model: {macs_per_call:,} MACs per call < {PARALLEL_MIN_MACS:,}"
            return ThreadPlan(1, inter, spin, why if share > 1 else _one_cpu(cpus, instances))
        why = f"{macs_per_call:,} MACs per call: using {_cpus_each(share, cpus, instances)}"
        return ThreadPlan(share, inter, spin, why)
    if engine_bytes <= SMALL_ENGINE_BYTES or share == 1:
        why = f"no work estimate; small engine file ({engine_bytes:,} bytes)"
        return ThreadPlan(1, inter, spin, why if share > 1 else _one_cpu(cpus, instances))
    why = f"no work estimate; engine file {engine_bytes:,} bytes: using {_cpus_each(share, cpus, instances)}"
    return ThreadPlan(share, inter, spin, why)


def _one_cpu(cpus: int, instances: int) -> str:
    return "one CPU available" if instances == 1 else f"{cpus} CPUs shared by {instances} instances: one each"


def _cpus_each(share: int, cpus: int, instances: int) -> str:
    return (
        f"{share} CPUs" if instances == 1 else f"{share} of {cpus} CPUs per instance ({instances} instances)"
    )


def serving_options(plan: ThreadPlan) -> onnxruntime.SessionOptions:
    """Options for loading a built engine: the graph is optimized already, so optimization is off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = plan.intra_op_threads
    options.inter_op_num_threads = plan.inter_op_threads
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = True
    options.log_severity_level = _QUIET
    spin = "1" if plan.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


def build_options(optimized_path: str, external_data_name: str | None) -> onnxruntime.SessionOptions:
    """Options for the build session: full optimization for this CPU, saved to ``optimized_path``.

    ``external_data_name`` (a file name beside ``optimized_path``) saves the weights outside the
    graph file, for engines past protobuf's 2 GiB limit.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = optimized_path
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = _QUIET
    if external_data_name:
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", external_data_name
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", str(EXTERNAL_DATA_MIN_BYTES)
        )
    return options
