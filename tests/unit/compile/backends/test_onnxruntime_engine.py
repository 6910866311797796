from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_c
from ort_models import (
    IR_VERSION,
    OPSET,
    build_artifact,
    ctr,
    ctr_inputs,
    mlp,
    mlp_inputs,
    reference,
    source_of,
)

from kiln.compile.artifact import write_manifest
from kiln.compile.backends.base import LoadOptions
from kiln.compile.backends.cpu import usable_cpus
from kiln.compile.backends.onnxruntime import OnnxRuntimeBackend
from kiln.compile.backends.onnxruntime_engine import map_run_error
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, EngineFailed, InvalidInput, NotReady


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend()


def wide_matmul() -> onnx.ModelProto:
    """x [batch, 512] @ 512x1024: ~0.5 M MACs per sample, 16 M at batch 32."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1024])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def test_instances_run_concurrently_on_one_session(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model = ctr()
    engine = backend.load(build_artifact(backend, model, tmp_path / "ctr"))
    batches = [ctr_inputs(1 + i % 5, seed=i) for i in range(24)]
    expected = [reference(model, feeds)[0] for feeds in batches]
    start = threading.Barrier(4)

    def runner(worker: int) -> list[np.ndarray]:
        instance = engine.create_instance()
        start.wait(timeout=10)
        outputs = [instance.run(batches[i])["prob"] for i in range(worker, len(batches), 4)]
        instance.close()
        return outputs

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(runner, range(4)))
    for worker, outputs in enumerate(results):
        for got, i in zip(outputs, range(worker, len(batches), 4), strict=True):
            np.testing.assert_allclose(got, expected[i], rtol=0, atol=1e-6)


def test_thread_policy_runs_a_tiny_model_on_one_thread(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    engine = backend.load(build_artifact(backend, ctr(), tmp_path / "ctr"))
    assert engine.thread_plan.intra_op_threads == 1
    assert engine.thread_plan.inter_op_threads == 1
    assert engine.thread_plan.allow_spinning is False
    assert "small model" in engine.thread_plan.reason


def test_thread_policy_uses_the_cpus_for_big_work(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    artifact = build_artifact(backend, wide_matmul(), tmp_path / "wide", BuildSpec(max_batch_size=32))
    assert artifact.manifest.extra["macs_per_sample"] == 512 * 1024
    engine = backend.load(artifact)
    assert engine.thread_plan.intra_op_threads == usable_cpus()
    pinned = backend.load(artifact, LoadOptions(intra_op_threads=3))
    assert pinned.thread_plan.intra_op_threads == 3
    assert pinned.thread_plan.reason == "set by load options"


def test_inputs_disagreeing_with_each_other_are_invalid_input(
    backend: OnnxRuntimeBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    instance = backend.load(build_artifact(backend, mlp(), tmp_path / "mlp")).create_instance()
    feeds = {"x": mlp_inputs(2)["x"], "bias": mlp_inputs(3)["bias"]}  # each fits the signature alone
    with caplog.at_level(logging.INFO), pytest.raises(InvalidInput) as info:
        instance.run(feeds)
    logged = [r for r in caplog.records if r.name.endswith("onnxruntime_engine")]
    assert logged
    assert logged[0].exc_info is not None  # the raw ORT error stays in the log
    message = str(info.value)
    assert "node add_bias (Add) refused the inputs" in message
    assert "broadcast" in message
    assert "'x': [2, 4]" in message
    assert "onnxruntime_src" not in message
    assert ".h:" not in message


def test_index_out_of_range_is_invalid_input(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    instance = backend.load(build_artifact(backend, ctr(), tmp_path / "ctr")).create_instance()
    feeds = ctr_inputs(2)
    feeds["ids"][0, 0] = 1000
    with pytest.raises(InvalidInput, match=r"node lookup \(Gather\) refused the inputs: indices element out"):
        instance.run(feeds)


def test_other_runtime_failures_are_engine_failed_without_internals() -> None:
    exc = ort_c.RuntimeException(
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul "
        "node. Name:'fc' Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 "
        "void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool) Failed to allocate memory"
    )
    error = map_run_error(exc, {"x": np.zeros((2, 4), np.float32)})
    assert isinstance(error, EngineFailed)
    assert error.retryable
    assert "node fc (MatMul)" in str(error)
    assert "RuntimeException" in str(error)
    assert "bfc_arena" not in str(error)
    assert isinstance(map_run_error(MemoryError(), {}), EngineFailed)


def test_closed_instance_and_engine(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    engine = backend.load(build_artifact(backend, mlp(), tmp_path / "mlp"))
    instance = engine.create_instance()
    instance.close()
    with pytest.raises(EngineFailed, match="instance is closed"):
        instance.run(mlp_inputs(1))
    live = engine.create_instance()
    engine.close()
    assert engine.closed
    with pytest.raises(NotReady, match="is closed"):
        live.run(mlp_inputs(1))
    with pytest.raises(NotReady, match="load the artifact again"):
        engine.create_instance()


def test_memory_counts_the_engine_file_and_an_arena(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    artifact = build_artifact(backend, ctr(), tmp_path / "ctr", BuildSpec(max_batch_size=16))
    engine = backend.load(artifact)
    file_bytes = artifact.engine_path.stat().st_size
    per_sample = artifact.manifest.extra["activation_bytes_per_sample"]
    assert isinstance(per_sample, int)
    assert per_sample > 0
    assert engine.memory_bytes() == file_bytes + 16 * per_sample


def test_non_tensor_outputs_are_refused_at_load(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["items"])],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_sequence_value_info("items", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    output = backend.build(source_of(model), BuildSpec(), tmp_path)
    artifact = write_manifest(
        tmp_path,
        key="seq",
        source=source_of(model),
        spec=BuildSpec(),
        target=backend.target(),
        output=output,
        build_seconds=0,
    )
    with pytest.raises(BuildError, match=r"'items' is not a plain tensor.*seq\(tensor\(float\)\)"):
        backend.load(artifact)
