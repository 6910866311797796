from __future__ import annotations

import numpy as np
import pytest

from kiln.errors import InvalidInput
from kiln.server.tensors import check_shape, datatype_name, dtype_for, from_list, from_raw, to_list, to_raw


@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [
        ("FP32", np.float32),
        ("INT64", np.int64),
        ("UINT8", np.uint8),
        ("BOOL", np.bool_),
        ("FP16", np.float16),
    ],
)
def test_raw_bytes_round_trip(datatype: str, dtype: type) -> None:
    array = np.arange(6).reshape(2, 3).astype(dtype)
    decoded = from_raw("x", datatype, (2, 3), to_raw(array))
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)
    assert datatype_name(array) == datatype


def test_raw_bytes_at_an_unaligned_offset_are_copied_to_an_aligned_array() -> None:
    values = np.arange(4, dtype=np.int64)
    buffer = b"xyz" + values.tobytes()
    decoded = from_raw("ids", "INT64", (4,), buffer, 3, 32)
    assert decoded.flags.aligned
    np.testing.assert_array_equal(decoded, values)


def test_raw_size_must_match_the_shape() -> None:
    with pytest.raises(
        InvalidInput, match=r"tensor 'x' has 12 bytes of data; shape \[2, 2\] of FP32 needs 16"
    ):
        from_raw("x", "FP32", (2, 2), b"\0" * 12)


def test_bytes_tensors_use_4_byte_length_prefixes() -> None:
    array = np.array([[b"ab", b""], [b"xyz", "\u00e9".encode()]], dtype=object)
    raw = to_raw(array)
    assert raw[:6] == b"\x02\x00\x00\x00ab"
    decoded = from_raw("s", "BYTES", (2, 2), raw)
    assert decoded.dtype == object
    assert decoded.tolist() == array.tolist()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x05\x00\x00\x00ab", "element 0 says 5 bytes"),
        (b"\x01\x00\x00\x00a\x01\x00", "ends inside a 4-byte length prefix"),
        (b"\x01\x00\x00\x00a", "holds 1 elements; shape \\[2\\] needs 2"),
    ],
)
def test_broken_bytes_tensors_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        from_raw("s", "BYTES", (2,), raw)


def test_lists_nested_or_flat_give_the_same_tensor() -> None:
    nested = from_list("x", "FP32", (2, 2), [[1, 2], [3, 4]])
    flat = from_list("x", "FP32", (2, 2), [1, 2, 3, 4])
    np.testing.assert_array_equal(nested, flat)
    assert nested.dtype == np.float32


def test_list_length_must_match_the_shape() -> None:
    with pytest.raises(InvalidInput, match=r"tensor 'x' has 3 elements of data; shape \[2, 2\] needs 4"):
        from_list("x", "FP32", (2, 2), [1, 2, 3])


def test_values_that_do_not_convert_are_refused() -> None:
    with pytest.raises(InvalidInput, match="does not convert to INT64"):
        from_list("ids", "INT64", (1,), ["seven"])
    with pytest.raises(InvalidInput, match="does not convert to INT64"):
        from_list("ids", "INT64", (1,), [float("nan")])


def test_bytes_from_lists_take_text_and_bytes() -> None:
    decoded = from_list("s", "BYTES", (2,), ["ab", b"cd"])
    assert decoded.tolist() == [b"ab", b"cd"]
    with pytest.raises(InvalidInput, match="non-string element"):
        from_list("s", "BYTES", (1,), [3])


def test_unknown_and_unsupported_datatypes_are_named() -> None:
    with pytest.raises(InvalidInput, match="tensor 'x' has an unknown datatype \\(seen: FLOAT32\\)"):
        dtype_for("x", "FLOAT32")
    with pytest.raises(InvalidInput, match="BF16"):
        dtype_for("x", "BF16")


@pytest.mark.parametrize("shape", [[-1, 4], [2.5], ["2"], [True]])
def test_shapes_must_be_non_negative_integers(shape: list[object]) -> None:
    with pytest.raises(InvalidInput, match="invalid shape"):
        check_shape("x", shape)


def test_outputs_as_json_lists() -> None:
    assert to_list(np.array([[1.5, 2.0]], dtype=np.float32)) == [1.5, 2.0]
    assert to_list(np.array([b"ok", b"\xff"], dtype=object)) == ["ok", "\ufffd"]
