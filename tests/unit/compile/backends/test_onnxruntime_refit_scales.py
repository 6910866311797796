"""Recomputing int8 weight scales on refit: the rule, when it is trusted, and when it is refused."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kiln.compile.backends.onnxruntime_refit_map import quantize
from kiln.compile.backends.onnxruntime_refit_scales import (
    QuantWeight,
    bias_scale,
    new_scale,
    plan_scales,
    symmetric_scale,
)

WEIGHT = np.array([[0.5, -2.54, 1.0], [0.0, 0.0, 0.0], [0.1, 0.2, -0.3]], dtype=np.float32)
BIAS = np.array([0.01, -0.02, 0.0], dtype=np.float32)
INPUT_SCALE = np.float32(0.05)


def test_the_symmetric_scale_is_max_abs_over_127_per_channel_and_one_for_a_zero_channel() -> None:
    scale = symmetric_scale(WEIGHT, 0, 3)
    assert scale.dtype == np.float32
    np.testing.assert_allclose(scale, [2.54 / 127, 1.0, 0.3 / 127], rtol=1e-6)
    assert symmetric_scale(WEIGHT, 0, 1).tolist() == [np.float32(2.54 / 127)]


def test_new_scale_of_a_bias_is_the_input_scale_times_the_weights_new_scale() -> None:
    moved = {"w": WEIGHT * 3}
    weight = new_scale({"source": "w", "axis": 0, "channels": 3}, moved)
    bias = new_scale({"weight": "w", "axis": 0, "channels": 3, "input_scale": 0.05}, moved)
    np.testing.assert_array_equal(bias, bias_scale(INPUT_SCALE, weight))
    assert np.abs(quantize(WEIGHT * 3, weight, np.zeros(3), 0, np.dtype(np.int8))).max() == 127


def graphs(
    weight_scale: np.ndarray, *, scale_reader: bool = False
) -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, QuantWeight]]:
    """A QDQ precision-pass graph (one Gemm) and an engine graph of one fused node reading it."""
    b_scale = bias_scale(INPUT_SCALE, weight_scale)
    w_q = quantize(WEIGHT, weight_scale, np.zeros(3), 0, np.dtype(np.int8))
    b_q = quantize(BIAS, b_scale, np.zeros(3), 0, np.dtype(np.int32))
    inits = {
        "w_quantized": w_q,
        "w_scale": weight_scale.astype(np.float32),
        "w_zero_point": np.zeros(3, np.int8),
        "b_quantized": b_q,
        "b_quantized_scale": b_scale,
        "b_quantized_zero_point": np.zeros(3, np.int32),
        "x_scale": np.array(INPUT_SCALE, np.float32),
        "x_zero_point": np.array(0, np.int8),
    }
    dq = "DequantizeLinear"
    precise = helper.make_model(
        helper.make_graph(
            [
                helper.make_node(dq, ["x_q", "x_scale", "x_zero_point"], ["x"]),
                helper.make_node(dq, ["w_quantized", "w_scale", "w_zero_point"], ["w"], axis=0),
                helper.make_node(dq, ["b_quantized", "b_quantized_scale", "b_quantized_zero_point"], ["b"]),
                helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1),
            ],
            "precise",
            [helper.make_tensor_value_info("x_q", TensorProto.INT8, [1, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
            [numpy_helper.from_array(v, k) for k, v in inits.items()],
        )
    )
    fused = ["x_q", "x_scale", "x_zero_point", "w_quantized", "w_scale", "w_zero_point", "b_quantized"]
    nodes = [helper.make_node("QGemm", fused, ["y"], domain="com.microsoft")]
    if scale_reader:
        nodes.append(helper.make_node("Mul", ["y", "w_scale"], ["z"]))
    held = {k: v for k, v in inits.items() if not k.startswith("b_quantized_")}
    engine = helper.make_model(
        helper.make_graph(nodes, "engine", [], [], [numpy_helper.from_array(v, k) for k, v in held.items()])
    )
    quantized = {
        "w_quantized": QuantWeight(
            "w_quantized", "w", "w_scale", tuple(float(s) for s in weight_scale), (0, 0, 0), 0, "int8"
        ),
        "b_quantized": QuantWeight(
            "b_quantized", "b", "b_quantized_scale", tuple(float(s) for s in b_scale), (0, 0, 0), 0, "int32"
        ),
    }
    return precise, engine, quantized


def test_scales_that_follow_the_rule_are_recomputed_with_the_bias() -> None:
    precise, engine, quantized = graphs(symmetric_scale(WEIGHT, 0, 3))
    plan = plan_scales(precise, engine, quantized, {"w": WEIGHT, "b": BIAS})
    assert plan.recomputed == ["w"]
    assert plan.kept == {}
    assert plan.entries["w_scale"] == {"kind": "scale", "source": "w", "axis": 0, "channels": 3}
    assert plan.entries["w_quantized"] == {"scale_rule": "symmetric"}
    link = plan.entries["b_quantized"]["scale_from"]
    assert link["weight"] == "w"
    assert link["input_scale"] == float(INPUT_SCALE)


def test_scales_that_do_not_follow_the_rule_are_kept_and_say_why() -> None:
    precise, engine, quantized = graphs(symmetric_scale(WEIGHT, 0, 3) * np.float32(1.25))
    plan = plan_scales(precise, engine, quantized, {"w": WEIGHT, "b": BIAS})
    assert plan.recomputed == []
    assert plan.entries == {}
    assert "not max|w|/127" in plan.kept["w"]


def test_a_scale_the_engine_reads_elsewhere_is_kept() -> None:
    precise, engine, quantized = graphs(symmetric_scale(WEIGHT, 0, 3), scale_reader=True)
    plan = plan_scales(precise, engine, quantized, {"w": WEIGHT, "b": BIAS})
    assert plan.entries == {}
    assert "apart from the weight" in plan.kept["w"]


def test_a_bias_whose_scale_is_not_the_product_keeps_the_weights_scales() -> None:
    precise, engine, quantized = graphs(symmetric_scale(WEIGHT, 0, 3))
    bias = quantized["b_quantized"]
    quantized["b_quantized"] = QuantWeight(
        bias.name, bias.source, bias.scale_name, tuple(2 * s for s in bias.scale), (0, 0, 0), 0, "int32"
    )
    plan = plan_scales(precise, engine, quantized, {"w": WEIGHT, "b": BIAS})
    assert plan.entries == {}
    assert "input_scale * weight_scale" in plan.kept["w"]
