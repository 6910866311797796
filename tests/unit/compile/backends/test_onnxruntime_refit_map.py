"""The pure parts of the refit map: quantization as ONNX Runtime's quantizer does it, gathers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kiln.compile.backends.onnxruntime_refit import serialized_in_pieces
from kiln.compile.backends.onnxruntime_refit_map import (
    gather,
    not_refittable,
    quantize,
    quantize_counting,
    tensor_digest,
)


def test_quantize_rounds_half_to_even_and_saturates_per_channel() -> None:
    weights = np.array([[0.5, 1.5, 300.0], [-2.5, 0.0, -400.0]], dtype=np.float32)
    q = quantize(weights, np.array([1.0, 2.0]), np.array([0, 0]), 0, np.dtype(np.int8))
    assert q.dtype == np.int8
    assert q.tolist() == [[0, 2, 127], [-1, 0, -128]]


def test_quantize_with_a_zero_point_per_tensor() -> None:
    q = quantize(np.array([0.0, 1.0, -1.0]), np.array(0.5), np.array(10), 1, np.dtype(np.uint8))
    assert q.tolist() == [10, 12, 8]


def test_gather_reads_across_sources_and_pads_with_zero() -> None:
    a = np.array([1.0, 2.0], dtype=np.float32)
    b = np.array([[3.0], [4.0]], dtype=np.float32)
    out = gather([a, b], np.array([3, -1, 0, 2]), (2, 2))
    assert out.tolist() == [[4.0, 0.0], [1.0, 3.0]]


def test_tensor_digest_sees_dtype_and_shape() -> None:
    flat = np.zeros(4, dtype=np.float32)
    assert tensor_digest(flat) != tensor_digest(flat.reshape(2, 2))
    assert tensor_digest(flat) != tensor_digest(flat.astype(np.float64))
    assert tensor_digest(flat) == tensor_digest(np.zeros(4, dtype=np.float32))


def test_a_not_refittable_record_says_why() -> None:
    assert not_refittable("because") == {"format": 1, "refittable": False, "reason": "because"}


def test_quantize_counting_counts_the_saturated_values() -> None:
    weights = np.array([[0.5, 1.5, 300.0], [-2.5, 0.0, -400.0]], dtype=np.float32)
    q, clipped = quantize_counting(weights, np.array([1.0, 2.0]), np.array([0, 0]), 0, np.dtype(np.int8))
    assert (
        q.tolist() == quantize(weights, np.array([1.0, 2.0]), np.array([0, 0]), 0, np.dtype(np.int8)).tolist()
    )
    assert clipped == 2


def test_an_engine_written_in_pieces_reads_back_as_the_same_model() -> None:
    sizes = {"small": (3,), "medium": (40,), "large": (300, 70)}  # 1-, 2- and 3-byte lengths
    weights = {n: np.arange(np.prod(s), dtype=np.float32).reshape(s) for n, s in sizes.items()}
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(v, n) for n, v in weights.items()],
    )
    model = helper.make_model(graph)
    whole = onnx.ModelProto()
    whole.CopyFrom(model)

    back = onnx.ModelProto()
    back.ParseFromString(b"".join(serialized_in_pieces(model)))

    assert {t.name: numpy_helper.to_array(t).tolist() for t in back.graph.initializer} == {
        n: v.tolist() for n, v in weights.items()
    }
    back_rest, whole_rest = onnx.ModelProto(), onnx.ModelProto()
    back_rest.CopyFrom(back)
    whole_rest.CopyFrom(whole)
    back_rest.graph.ClearField("initializer")
    whole_rest.graph.ClearField("initializer")
    assert back_rest == whole_rest
