"""Tensors on the wire, for both protocols: datatype names, shapes, raw little-endian bytes,
typed lists (JSON ``data``, gRPC ``contents``) and BYTES elements (4-byte length + bytes).

Every failure is ``InvalidInput`` naming the tensor, the value seen and what was expected.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

import numpy as np

from kiln.errors import InvalidInput, describe
from kiln.types import DATATYPES, Array

_DTYPES: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}
_DATATYPE_OF: dict[str, str] = {
    "b": "BOOL",
    "u1": "UINT8",
    "u2": "UINT16",
    "u4": "UINT32",
    "u8": "UINT64",
    "i1": "INT8",
    "i2": "INT16",
    "i4": "INT32",
    "i8": "INT64",
    "f2": "FP16",
    "f4": "FP32",
    "f8": "FP64",
}
_LENGTH = struct.Struct("<I")


def dtype_for(tensor: str, datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype of a protocol datatype; ``InvalidInput`` naming the tensor otherwise."""
    dtype = _DTYPES.get(datatype)
    if dtype is not None:
        return dtype
    if datatype == "BF16":
        raise InvalidInput(
            describe(f"tensor {tensor!r} is BF16, which kiln's server does not take", fix="send FP32 or FP16")
        )
    raise InvalidInput(
        describe(
            f"tensor {tensor!r} has an unknown datatype",
            seen=datatype,
            fix=f"use one of {', '.join(DATATYPES)}",
        )
    )


def datatype_name(array: Array) -> str:
    """The protocol datatype of an output array (``BYTES`` for object and string arrays)."""
    return _datatype_name(array.dtype)


@functools.cache
def _datatype_name(dtype: np.dtype[np.generic]) -> str:
    kind = dtype.kind
    if kind in "OSU":
        return "BYTES"
    name = _DATATYPE_OF.get("b" if kind == "b" else f"{kind}{dtype.itemsize}")
    if name is None:
        raise TypeError(f"output dtype {dtype} has no protocol datatype")
    return name


def check_shape(tensor: str, shape: Sequence[object]) -> tuple[int, ...]:
    """A request shape as ints >= 0; ``InvalidInput`` for anything else."""
    dims: list[int] = []
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise InvalidInput(
                describe(
                    f"tensor {tensor!r} has an invalid shape",
                    seen=list(shape),
                    fix="give non-negative integers",
                )
            )
        dims.append(dim)
    return tuple(dims)


def element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def from_raw(  # noqa: PLR0917 (mirrors the wire: name, type, shape, bytes, where)
    tensor: str,
    datatype: str,
    shape: tuple[int, ...],
    buffer: bytes | memoryview,
    offset: int = 0,
    size: int | None = None,
) -> Array:
    """A tensor from raw little-endian bytes (no copy unless misaligned). ``size`` defaults to the
    rest of ``buffer``; it must hold exactly the shape's elements."""
    dtype = dtype_for(tensor, datatype)
    size = len(buffer) - offset if size is None else size
    if datatype == "BYTES":
        return _bytes_from_raw(tensor, shape, bytes(buffer[offset : offset + size]))
    count = element_count(shape)
    if count * dtype.itemsize != size:
        raise InvalidInput(
            describe(
                f"tensor {tensor!r} has {size} bytes of data",
                fix=f"shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes",
            )
        )
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
    return array if array.flags.aligned else array.copy()


def _bytes_from_raw(tensor: str, shape: tuple[int, ...], data: bytes) -> Array:
    items: list[bytes] = []
    position = 0
    while position < len(data):
        if position + 4 > len(data):
            raise InvalidInput(
                describe(
                    f"BYTES tensor {tensor!r} ends inside a 4-byte length prefix", seen=f"{len(data)} bytes"
                )
            )
        (length,) = _LENGTH.unpack_from(data, position)
        position += 4
        if position + length > len(data):
            raise InvalidInput(
                describe(
                    f"BYTES tensor {tensor!r}: element {len(items)} says {length} bytes",
                    seen=f"{len(data) - position} bytes left",
                    fix="prefix each element with its 4-byte little-endian length",
                )
            )
        items.append(data[position : position + length])
        position += length
    return _object_array(tensor, shape, items)


def _object_array(tensor: str, shape: tuple[int, ...], items: Sequence[bytes]) -> Array:
    count = element_count(shape)
    if len(items) != count:
        raise InvalidInput(
            describe(
                f"BYTES tensor {tensor!r} holds {len(items)} elements",
                fix=f"shape {list(shape)} needs {count}",
            )
        )
    array = np.empty(count, dtype=np.object_)
    array[:] = list(items)
    return array.reshape(shape)


def from_list(tensor: str, datatype: str, shape: tuple[int, ...], data: object) -> Array:
    """A tensor from a (nested or flat) list of values: JSON ``data`` or gRPC typed contents."""
    dtype = dtype_for(tensor, datatype)
    if datatype == "BYTES":
        return _object_array(tensor, shape, [_to_bytes(tensor, item) for item in _flatten(data)])
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            describe(f"tensor {tensor!r} data does not convert to {datatype}", seen=str(exc))
        ) from None
    count = element_count(shape)
    if array.size != count:
        raise InvalidInput(
            describe(
                f"tensor {tensor!r} has {array.size} elements of data",
                fix=f"shape {list(shape)} needs {count}",
            )
        )
    return array.reshape(shape)


def _flatten(data: object) -> list[object]:
    if not isinstance(data, list | tuple):
        return [data]
    flat: list[object] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list | tuple) else [item])
    return flat


def _to_bytes(tensor: str, item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    raise InvalidInput(
        describe(f"BYTES tensor {tensor!r} holds a non-string element", seen=type(item).__name__)
    )


def to_raw(array: Array) -> bytes:
    """An output's raw bytes: little-endian, row-major; BYTES elements length-prefixed."""
    if array.dtype.kind in "OSU":
        parts: list[bytes] = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            parts += (_LENGTH.pack(len(data)), data)
        return b"".join(parts)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


def to_list(array: Array) -> list[object]:
    """An output as a flat list (for JSON): BYTES as text where it decodes as UTF-8."""
    flat = array.reshape(-1)
    if array.dtype.kind in "OSU":
        return [_text(item) for item in flat]
    values: list[object] = flat.tolist()
    return values


def _text(item: object) -> str:
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    return str(item)
