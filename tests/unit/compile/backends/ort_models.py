"""Tiny ONNX models built inline, and helpers turning them into sources and artifacts for tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kiln.compile.artifact import write_manifest
from kiln.compile.backends.base import EngineArtifact
from kiln.compile.backends.onnxruntime import OnnxRuntimeBackend
from kiln.compile.spec import BuildSpec
from kiln.model.source import Fingerprint, ModelSource
from kiln.types import TensorSpec, datatype_of

OPSET = 18
IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 unless told


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def mlp(seed: int = 0, scale: float = 1.0) -> onnx.ModelProto:
    """x FP32 [batch, 4] and bias FP32 [batch, 3] -> Gemm 4x8 -> Relu -> Gemm 8x3 -> + bias -> y."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32) * scale, "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["z"], name="fc2"),
        helper.make_node("Add", ["z", "bias"], ["y"], name="add_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["batch", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        weights,
    )
    return _model(graph)


def ctr(seed: int = 0) -> onnx.ModelProto:
    """dense FP32 [batch, 13] + ids INT64 [batch, 4] -> embedding(100x8) -> concat -> Gemm -> sigmoid."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((100, 8)).astype(np.float32), "table"),
        numpy_helper.from_array(np.array([0, 32], np.int64), "flat"),
        numpy_helper.from_array(rng.standard_normal((45, 1)).astype(np.float32) * 0.2, "w"),
        numpy_helper.from_array(np.zeros(1, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="lookup"),
        helper.make_node("Reshape", ["emb", "flat"], ["emb_flat"], name="flatten"),
        helper.make_node("Concat", ["dense", "emb_flat"], ["features"], axis=1, name="concat"),
        helper.make_node("Gemm", ["features", "w", "b"], ["logit"], name="head"),
        helper.make_node("Sigmoid", ["logit"], ["prob"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "ctr",
        [
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["batch", 13]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4]),
        ],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1])],
        weights,
    )
    return _model(graph)


def cnn(seed: int = 0) -> onnx.ModelProto:
    """image FP32 [batch, 3, 8, 8] -> Conv 16x3x3x3 -> Relu -> flatten -> MatMul 1024x10 -> logits."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.standard_normal((1024, 10)).astype(np.float32) * 0.05, "fc_w"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "flat"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc_w"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        weights,
    )
    return _model(graph)


def _specs(values: list[onnx.ValueInfoProto]) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        if not value.type.HasField("tensor_type"):
            continue  # sequences and maps: not servable, left out of the signature
        tensor = value.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        specs.append(TensorSpec(value.name, datatype_of(dtype), shape))
    return tuple(specs)


def source_of(model: onnx.ModelProto, name: str = "model") -> ModelSource:
    """A ModelSource for an in-memory model (the fingerprint is a plain hash: test data only)."""
    data = model.SerializeToString()
    digest = hashlib.sha256(data).hexdigest()
    return ModelSource(
        path=Path(f"{name}.onnx"),
        format="onnx",
        fingerprint=Fingerprint(digest, digest, (("", OPSET),), model.ir_version),
        inputs=_specs(list(model.graph.input)),
        outputs=_specs(list(model.graph.output)),
        size_bytes=len(data),
        model=model,
    )


def build_artifact(
    backend: OnnxRuntimeBackend, model: onnx.ModelProto, out_dir: Path, spec: BuildSpec | None = None
) -> EngineArtifact:
    """Build ``model`` into ``out_dir`` and write its manifest, as the engine cache would."""
    spec = spec or BuildSpec()
    source = source_of(model)
    output = backend.build(source, spec, out_dir)
    return write_manifest(
        out_dir,
        key=source.fingerprint.structure_hash[:16],
        source=source,
        spec=spec,
        target=backend.target(),
        output=output,
        build_seconds=0.0,
    )


def reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of the unoptimized model on ONNX Runtime: the fp32 oracle."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


def mlp_inputs(batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, 4)).astype(np.float32),
        "bias": rng.standard_normal((batch, 3)).astype(np.float32),
    }


def ctr_inputs(batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense": rng.standard_normal((batch, 13)).astype(np.float32),
        "ids": rng.integers(0, 100, size=(batch, 4)).astype(np.int64),
    }
