"""Tiny ONNX models built inline for the precision-pass tests, and an fp32 ONNX Runtime oracle."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def _model(nodes: list[onnx.NodeProto], inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build_mlp(seed: int = 0, width: int = 16, layers: int = 2, batch: int | str = "batch") -> onnx.ModelProto:
    """x[batch, width] -> (MatMul + Add + Relu) x layers -> y. Nodes mm{i}, add{i}, relu{i}."""
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "x"
    for i in range(layers):
        w = (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"W{i}"),
            numpy_helper.from_array(rng.normal(size=width).astype(np.float32) * 0.1, f"B{i}"),
        ]
        out = "y" if i == layers - 1 else f"r{i}"
        nodes += [
            helper.make_node("MatMul", [current, f"W{i}"], [f"m{i}"], name=f"mm{i}"),
            helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}"], name=f"add{i}"),
            helper.make_node("Relu", [f"a{i}"], [out], name=f"relu{i}"),
        ]
        current = out
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])],
        inits,
    )


def build_ctr(seed: int = 0, vocab: int = 50, dim: int = 4, dense: int = 3) -> onnx.ModelProto:
    """ids[batch, 2] int64 -> Gather(embedding) -> flatten, concat dense[batch, 3] -> Gemm -> Sigmoid."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(vocab, dim)).astype(np.float32)
    w = rng.normal(size=(2 * dim + dense, 1)).astype(np.float32)
    inits = [
        numpy_helper.from_array(table, "emb"),
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.zeros(1, np.float32), "B"),
        numpy_helper.from_array(np.array([0, 2 * dim], np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("Reshape", ["e", "flat_shape"], ["ef"], name="flatten"),
        helper.make_node("Concat", ["ef", "dense"], ["feats"], axis=1, name="concat"),
        helper.make_node("Gemm", ["feats", "W", "B"], ["logit"], name="fc"),
        helper.make_node("Sigmoid", ["logit"], ["prob"], name="sigmoid"),
    ]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 2]),
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["batch", dense]),
        ],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )


def build_conv(seed: int = 0, channels: int = 4, classes: int = 5) -> onnx.ModelProto:
    """img[batch, 3, 8, 8] -> Conv 3x3 -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> logits."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(channels, 3, 3, 3)).astype(np.float32) * 0.3, "K"),
        numpy_helper.from_array(rng.normal(size=channels).astype(np.float32) * 0.1, "KB"),
        numpy_helper.from_array(rng.normal(size=(channels, classes)).astype(np.float32), "FW"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "FB"),
    ]
    nodes = [
        helper.make_node("Conv", ["img", "K", "KB"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["cr"], name="relu"),
        helper.make_node("GlobalAveragePool", ["cr"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["pf"], name="flat"),
        helper.make_node("Gemm", ["pf", "FW", "FB"], ["logits"], name="fc"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )


def build_celu(width: int = 4) -> onnx.ModelProto:
    """x -> MatMul -> Celu -> y. Celu accepts only float32, so a plain fp16 conversion breaks it."""
    w = np.eye(width, dtype=np.float32)
    return _model(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Celu", ["h"], ["y"], name="celu"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(w, "W")],
    )


def build_masked(width: int = 4) -> onnx.ModelProto:
    """x, mask(int64) -> MatMul(x) * Cast(mask to float) -> y: a Cast the fp16 pass must leave alone."""
    return _model(
        [
            helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT, name="cast_mask"),
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Mul", ["h", "maskf"], ["y"], name="mul"),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", width]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(np.full((width, width), 0.5, np.float32), "W")],
    )


def build_tanh(width: int = 4) -> onnx.ModelProto:
    """x -> Tanh -> y: no op the int8 quantizer handles."""
    return _model(
        [helper.make_node("Tanh", ["x"], ["y"], name="tanh")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [],
    )


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The first output of ``model`` run by ONNX Runtime's CPU provider (the fp32 oracle)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])


def rel_l2(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.linalg.norm(candidate - reference) / np.linalg.norm(reference))
