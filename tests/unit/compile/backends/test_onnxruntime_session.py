from __future__ import annotations

from kiln.compile.backends.base import LoadOptions
from kiln.compile.backends.onnxruntime_session import (
    PARALLEL_MIN_MACS,
    SMALL_ENGINE_BYTES,
    batch_hint,
    plan_threads,
    serving_options,
)
from kiln.compile.spec import BuildSpec
from kiln.types import ShapeProfile


def test_small_work_runs_on_one_thread() -> None:
    plan = plan_threads(LoadOptions(), macs_per_call=PARALLEL_MIN_MACS - 1, engine_bytes=10**9, cpus=8)
    assert (plan.intra_op_threads, plan.inter_op_threads, plan.allow_spinning) == (1, 1, False)


def test_big_work_uses_every_cpu() -> None:
    plan = plan_threads(LoadOptions(), macs_per_call=PARALLEL_MIN_MACS, engine_bytes=0, cpus=8)
    assert plan.intra_op_threads == 8
    assert plan.allow_spinning is False
    assert plan_threads(LoadOptions(), macs_per_call=10**12, engine_bytes=0, cpus=1).intra_op_threads == 1


def test_without_an_estimate_the_file_size_decides() -> None:
    small = plan_threads(LoadOptions(), macs_per_call=None, engine_bytes=SMALL_ENGINE_BYTES, cpus=4)
    big = plan_threads(LoadOptions(), macs_per_call=None, engine_bytes=SMALL_ENGINE_BYTES + 1, cpus=4)
    assert (small.intra_op_threads, big.intra_op_threads) == (1, 4)
    assert "no work estimate" in big.reason


def test_several_instances_split_the_cpus() -> None:
    big = PARALLEL_MIN_MACS * 10

    def threads(instances: int, cpus: int, macs: int | None = big) -> int:
        options = LoadOptions(num_instances=instances)
        return plan_threads(options, macs_per_call=macs, engine_bytes=10**9, cpus=cpus).intra_op_threads

    assert [threads(n, 8) for n in (1, 2, 3, 4, 8, 16)] == [8, 4, 2, 2, 1, 1]
    assert [threads(n, 2) for n in (1, 2, 4)] == [2, 1, 1]
    assert threads(2, 8, macs=None) == 4  # the file-size rule splits the same way
    assert threads(2, 8, macs=PARALLEL_MIN_MACS - 1) == 1  # small work stays on one thread
    plan = plan_threads(LoadOptions(num_instances=2), macs_per_call=big, engine_bytes=0, cpus=2)
    assert plan.reason == "2 CPUs shared by 2 instances: one each"
    plan = plan_threads(LoadOptions(num_instances=2), macs_per_call=big, engine_bytes=0, cpus=8)
    assert "4 of 8 CPUs per instance (2 instances)" in plan.reason


def test_set_threads_are_not_split() -> None:
    options = LoadOptions(intra_op_threads=2, num_instances=4)
    assert plan_threads(options, macs_per_call=10**12, engine_bytes=0, cpus=2).intra_op_threads == 2


def test_load_options_override_the_policy() -> None:
    options = LoadOptions(intra_op_threads=2, inter_op_threads=0)
    plan = plan_threads(options, macs_per_call=1, engine_bytes=0, cpus=8)
    assert (plan.intra_op_threads, plan.inter_op_threads) == (2, 1)


def test_batch_hint_prefers_the_profile_opt() -> None:
    assert batch_hint(BuildSpec(max_batch_size=64)) == 64
    profiled = BuildSpec(profiles=(ShapeProfile("x", (1, 4), (16, 4), (64, 4)),), max_batch_size=64)
    assert batch_hint(profiled) == 16


def test_serving_options_turn_optimization_and_spinning_off() -> None:
    import onnxruntime as ort

    options = serving_options(plan_threads(LoadOptions(), macs_per_call=1, engine_bytes=0, cpus=2))
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_spinning_is_off_unless_load_options_ask_for_it() -> None:
    default = plan_threads(LoadOptions(), macs_per_call=10**9, engine_bytes=0, cpus=2)
    spinning = plan_threads(LoadOptions(allow_spinning=True), macs_per_call=10**9, engine_bytes=0, cpus=2)
    assert not default.allow_spinning
    assert spinning.allow_spinning
    assert spinning.intra_op_threads == default.intra_op_threads == 2
    options = serving_options(spinning)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
