"""The fp32 reference: the source model run by ONNX Runtime, with optimizations off or on."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.compile.accuracy import relative_l2
from kiln.compile.data import SampleSet
from kiln.compile.reference import reference_options, reference_outputs
from kiln.errors import BuildError
from kiln.examples import make_model, make_samples


def affine() -> object:
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_outputs_are_the_model_applied_batch_by_batch() -> None:
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    seen: list[tuple[str, int, int]] = []

    outputs = reference_outputs(
        affine(), SampleSet({"x": x}), batch_size=4, progress=lambda *a: seen.append(a), threads=1
    )

    expected = np.maximum(x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10), 0)
    np.testing.assert_allclose(outputs["y"], expected, rtol=1e-6)
    assert seen == [("fp32 reference", 1, 3), ("fp32 reference", 2, 3), ("fp32 reference", 3, 3)]


def test_samples_the_model_refuses_are_a_build_error() -> None:
    with pytest.raises(BuildError, match="fp32 reference model failed on the samples"):
        reference_outputs(affine(), SampleSet({"x": np.zeros((2, 5), np.float32)}), batch_size=2)


@pytest.mark.parametrize("name", ["ctr", "cnn", "ranker"])
def test_the_optimized_reference_agrees_with_the_unoptimized_one_on_the_examples(name: str) -> None:
    """The premise of checking int8 and fp16 engines against the optimized fp32 run."""
    samples = SampleSet(
        {k: v for k, v in make_samples(name, 64, size="tiny").items() if not k.startswith("_")}
    )
    for seed in (0, 1):  # the model and a retrain of it
        model = make_model(name, size="tiny", seed=seed)
        plain = reference_outputs(model, samples, batch_size=32)
        optimized = reference_outputs(model, samples, batch_size=32, optimized=True)
        assert plain.keys() == optimized.keys()
        for output, value in plain.items():
            assert relative_l2(value, optimized[output]) <= 1e-5, (name, seed, output)


def test_serialized_bytes_are_run_as_given() -> None:
    """The bytes the caller passes are what runs, not the model serialized again."""
    x = np.ones((2, 4), np.float32)
    model = affine()
    other = affine()
    other.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.zeros((4, 3), np.float32), "w"))
    outputs = reference_outputs(
        model,
        SampleSet({"x": x}),
        batch_size=2,
        serialized=other.SerializeToString(),  # type: ignore[attr-defined]
    )
    assert not outputs["y"].any()


@pytest.mark.parametrize("optimized", [False, True])
def test_the_reference_threads_do_not_spin_beside_other_work(optimized: bool) -> None:
    """The reference runs beside the engine being built or checked: idle pool threads must not
    hold a core by spin-waiting (ONNX Runtime's default)."""
    import onnxruntime as ort

    options = reference_options(threads=3, optimized=optimized)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    levels = ort.GraphOptimizationLevel
    expected = levels.ORT_ENABLE_ALL if optimized else levels.ORT_DISABLE_ALL
    assert options.graph_optimization_level == expected
