"""The pure parts of the refit map: quantization as ONNX Runtime's quantizer does it, gathers."""

from __future__ import annotations

import numpy as np

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
