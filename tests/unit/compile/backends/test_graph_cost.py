from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from ort_models import cnn, ctr, mlp

from kiln.compile.backends.graph_cost import estimate_cost, without_initializers
from kiln.types import ShapeProfile


def test_gemm_macs_per_sample() -> None:
    cost = estimate_cost(mlp())
    assert cost is not None
    assert cost.macs_per_sample == 4 * 8 + 8 * 3
    # h, r, z (8 + 8 + 3 floats) and the output y (3 floats), per sample
    assert cost.activation_bytes_per_sample == (8 + 8 + 3 + 3) * 4


def test_conv_macs_scale_with_the_feature_map() -> None:
    cost = estimate_cost(cnn())
    assert cost is not None
    assert cost.macs_per_sample == 16 * 3 * 3 * 3 * 8 * 8 + 1024 * 10


def test_lookups_cost_nothing_and_gemm_counts() -> None:
    cost = estimate_cost(ctr())
    assert cost is not None
    assert cost.macs_per_sample == 45


def test_profiles_pin_unknown_dims() -> None:
    weight = numpy_helper.from_array(np.ones((4, 8), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["tokens", "w"], ["y"])],
        "seq",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    unpinned = estimate_cost(model)
    assert unpinned is not None
    assert unpinned.macs_per_sample == 4 * 8  # the unknown sequence length counts as 1
    pinned = estimate_cost(model, [ShapeProfile("tokens", (1, 1, 4), (2, 16, 4), (8, 64, 4))])
    assert pinned is not None
    assert pinned.macs_per_sample == 16 * 4 * 8


def test_ops_of_unknown_shape_are_not_counted() -> None:
    model = mlp()
    model.graph.node[0].op_type = "CustomDense"  # fc1's output shape is now unknown
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    cost = estimate_cost(model)
    assert cost is not None
    assert cost.macs_per_sample == 8 * 3  # fc2 only: its width comes from the weight


def test_without_initializers_keeps_the_rest() -> None:
    model = mlp()
    skeleton = without_initializers(model)
    assert len(skeleton.graph.initializer) == 0
    assert len(model.graph.initializer) == 4
    assert [n.name for n in skeleton.graph.node] == [n.name for n in model.graph.node]
    assert skeleton.ir_version == model.ir_version
    assert list(skeleton.opset_import) == list(model.opset_import)
