"""fp32 / fp16 / bf16 passes against the fp32 ONNX Runtime oracle."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper
from tiny_models import build_celu, build_conv, build_masked, build_mlp, rel_l2, run_model

from kiln.compile.precision import apply_precision
from kiln.compile.precision._graph import sort_topologically
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, ConfigError

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_fp32_is_an_unchanged_copy() -> None:
    model = build_mlp()
    result = apply_precision(model, BuildSpec(precision="fp32"))
    assert result.path == "none"
    assert result.calibration_table is None
    assert result.model.SerializeToString() == model.SerializeToString()
    assert result.model is not model


def test_fp16_keeps_io_fp32_and_matches_the_reference() -> None:
    model = build_conv()
    before = model.SerializeToString()
    result = apply_precision(model, BuildSpec(precision="fp16"))
    assert result.path == "fp16"
    assert model.SerializeToString() == before  # input not modified
    graph = result.model.graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [TensorProto.FLOAT]
    assert {t.data_type for t in graph.initializer} == {TensorProto.FLOAT16}
    onnx.checker.check_model(result.model, full_check=True)  # also checks topological order
    img = np.random.default_rng(0).normal(size=(16, 3, 8, 8)).astype(np.float32)
    reference, candidate = run_model(model, {"img": img}), run_model(result.model, {"img": img})
    assert candidate.dtype == np.float32
    assert rel_l2(reference, candidate) < 2e-3  # fp16 keeps ~3 decimal digits


def test_fp16_leaves_casts_alone() -> None:
    model = build_masked()
    result = apply_precision(model, BuildSpec(precision="fp16"))
    cast = next(n for n in result.model.graph.node if n.name == "cast_mask")
    assert cast.attribute[0].i == TensorProto.FLOAT
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.normal(size=(8, 4)).astype(np.float32),
        "mask": rng.integers(0, 2, size=(8, 4)).astype(np.int64),
    }
    np.testing.assert_allclose(run_model(result.model, feeds), run_model(model, feeds), rtol=2e-3, atol=2e-3)


def test_fp16_model_that_does_not_load_names_the_node() -> None:
    with pytest.raises(BuildError, match="celu") as info:
        apply_precision(build_celu(), BuildSpec(precision="fp16"))
    assert "--keep-fp32 celu" in str(info.value)


@pytest.mark.parametrize(
    "spec",
    [
        BuildSpec(precision="fp16", keep_fp32_nodes=("celu",)),
        BuildSpec(precision="fp16", keep_fp32_op_types=("Celu",)),
    ],
    ids=["by-node", "by-op-type"],
)
def test_keep_fp32_makes_the_model_load(spec: BuildSpec) -> None:
    model = build_celu()
    result = apply_precision(model, spec)
    x = np.linspace(-3, 3, 32, dtype=np.float32).reshape(8, 4)
    np.testing.assert_allclose(
        run_model(result.model, {"x": x}), run_model(model, {"x": x}), rtol=2e-3, atol=2e-3
    )


def test_unknown_keep_fp32_node_lists_real_names() -> None:
    with pytest.raises(ConfigError, match="'mm7'") as info:
        apply_precision(build_mlp(), BuildSpec(precision="fp16", keep_fp32_nodes=("mm7",)))
    assert "mm0" in str(info.value)


def test_unknown_keep_fp32_op_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="'Gem'"):
        apply_precision(build_mlp(), BuildSpec(precision="fp16", keep_fp32_op_types=("Gem",)))


@pytest.mark.skipif(HAS_CUDA, reason="with CUDA, ONNX Runtime may run bf16")
def test_bf16_on_cpu_onnxruntime_is_refused_for_the_gpu_backends() -> None:
    with pytest.raises(BuildError, match="GPU backends"):
        apply_precision(build_mlp(), BuildSpec(precision="bf16"))


def test_bf16_for_a_gpu_backend_rounds_the_fp32_weights() -> None:
    model = build_mlp()
    result = apply_precision(model, BuildSpec(precision="bf16", backend="tensorrt"))
    assert result.path == "bf16"
    onnx.checker.check_model(result.model, full_check=True)
    graph = result.model.graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [TensorProto.FLOAT]
    bfloat16 = onnx.helper.tensor_dtype_to_np_dtype(TensorProto.BFLOAT16)
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for tensor in graph.initializer:
        assert tensor.data_type == TensorProto.BFLOAT16
        values = numpy_helper.to_array(tensor).astype(np.float32)
        rounded = original[tensor.name].astype(bfloat16).astype(np.float32)  # round to nearest even
        np.testing.assert_array_equal(values, rounded)
        np.testing.assert_allclose(values, original[tensor.name], rtol=2**-8)


def test_sort_topologically_puts_producers_first() -> None:
    model = build_mlp()
    nodes = list(model.graph.node)
    shuffled = [nodes[i] for i in (5, 0, 3, 1, 4, 2)]
    del model.graph.node[:]
    model.graph.node.extend(shuffled)
    sort_topologically(model.graph)
    assert [n.name for n in model.graph.node] == ["mm0", "add0", "relu0", "mm1", "add1", "relu1"]
