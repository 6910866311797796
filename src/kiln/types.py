"""Shared value types: tensor descriptions and the datatype names of the KServe v2 protocol.

kiln names datatypes the way the Open Inference Protocol does (``FP32``, ``INT64``...), because
those names cross every boundary: model signatures, the HTTP/gRPC protocol, config files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

import numpy as np
import numpy.typing as npt

DataType: TypeAlias = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]

Array: TypeAlias = npt.NDArray[np.generic]
Tensors: TypeAlias = Mapping[str, Array]
"""Named input or output tensors of one inference call."""

_NUMPY_OF: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_DATATYPE_OF: dict[np.dtype[np.generic], DataType] = {v: k for k, v in _NUMPY_OF.items()}  # type: ignore[misc]

DATATYPES: tuple[DataType, ...] = get_args(DataType)


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype for a protocol datatype name. Raises ``ValueError`` naming the known names."""
    try:
        return _NUMPY_OF[datatype]
    except KeyError:
        known = ", ".join(sorted(_NUMPY_OF))
        raise ValueError(f"unknown datatype {datatype!r}; expected one of {known}") from None


def datatype_of(dtype: npt.DTypeLike) -> DataType:
    """The protocol datatype name for a numpy dtype (``float32`` -> ``FP32``)."""
    key = np.dtype(dtype)
    if key.kind in ("U", "S"):
        return "BYTES"
    try:
        return _DATATYPE_OF[key]
    except KeyError:
        raise ValueError(f"numpy dtype {key} has no protocol datatype") from None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model: its name, datatype and shape.

    ``shape`` uses ``-1`` for a dimension that varies per call (the batch axis, a sequence length).
    """

    name: str
    datatype: DataType
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return numpy_dtype(self.datatype)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """True when ``shape`` has this spec's rank and matches every fixed dimension."""
        if len(shape) != len(self.shape):
            return False
        return all(want in (-1, got) for want, got in zip(self.shape, shape, strict=True))

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> TensorSpec:
        shape = data["shape"]
        assert isinstance(shape, list | tuple)
        return cls(str(data["name"]), str(data["datatype"]), tuple(int(d) for d in shape))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ShapeProfile:
    """The shapes one input may take: smallest, the one to optimise for, largest.

    The engine refuses a call whose shape falls outside ``min..max`` (per dimension), with an error
    naming the input, the shape seen and the range.
    """

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        ranks = {len(self.min), len(self.opt), len(self.max)}
        if len(ranks) != 1:
            raise ValueError(
                f"profile for {self.input!r}: min {self.min}, opt {self.opt} and max {self.max} "
                "must have the same rank; give one shape per input rank, e.g. 1x13,8x13,32x13"
            )
        for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True):
            if not 1 <= lo <= mid <= hi:
                raise ValueError(
                    f"profile for {self.input!r}: need 1 <= min <= opt <= max in every dimension, "
                    f"seen min {self.min}, opt {self.opt}, max {self.max}; fix the ranges"
                )

    def contains(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != len(self.min):
            return False
        return all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max, strict=True))

    def to_json(self) -> dict[str, object]:
        return {"input": self.input, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ShapeProfile:
        def dims(key: str) -> tuple[int, ...]:
            value = data[key]
            assert isinstance(value, list | tuple)
            return tuple(int(d) for d in value)

        return cls(str(data["input"]), dims("min"), dims("opt"), dims("max"))
