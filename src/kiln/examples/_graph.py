"""Shared pieces for building the example graphs with ``onnx.helper``.

Node and tensor names depend only on the graph's structure, never on the seed, and every value
fitted from data lives in an initializer, so two seeds give graphs that differ only in weights.
Fitted scalars are rounded to a coarse grid (:func:`round_scale`, :func:`round_shift`) so that the
bytes of a model do not depend on the last bits of the floating-point arithmetic of the machine
that fitted them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import ModelProto, NodeProto, TensorProto, ValueInfoProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
GENERATOR_VERSION = "1"
BATCH = "batch"

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# Random streams of one seed: weights, the sample inputs weights are fitted on, and the two
# sample sets. Calibration and validation therefore never share samples.
STREAM_WEIGHTS = 0
STREAM_FIT = 1
STREAM_CALIBRATION = 2
STREAM_VALIDATION = 3

_STEPS_PER_OCTAVE = 64
_SHIFT_STEP = 1.0 / 64.0


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent random stream for ``seed`` and a purpose (``stream``), stable across runs."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def round_scale(value: float) -> float:
    """A positive factor rounded to 1/64 of an octave (about 1 %)."""
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"a fitted scale must be finite and > 0, got {value}")
    return float(2.0 ** (round(np.log2(value) * _STEPS_PER_OCTAVE) / _STEPS_PER_OCTAVE))


def round_shift(value: float, unit: float = 1.0) -> float:
    """An offset rounded to a multiple of ``unit / 64``."""
    return float(round(value / unit / _SHIFT_STEP) * _SHIFT_STEP * unit)


def round_scales(values: F64) -> F64:
    """:func:`round_scale` on every element."""
    steps = np.round(np.log2(values) * _STEPS_PER_OCTAVE)
    return np.asarray(2.0 ** (steps / _STEPS_PER_OCTAVE), dtype=np.float64)


def round_shifts(values: F64, units: F64) -> F64:
    """:func:`round_shift` on every element, each with its own unit."""
    return np.asarray(np.round(values / units / _SHIFT_STEP) * _SHIFT_STEP * units, dtype=np.float64)


def normal(rng: np.random.Generator, shape: Sequence[int], std: float) -> F64:
    return rng.standard_normal(tuple(shape)) * std


def tensor_input(name: str, elem_type: int, dims: Sequence[int | str]) -> ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(dims))


class GraphBuilder:
    """Collects nodes and initializers in creation order; names are given by the caller.

    ``params`` holds named weights (float64, cast to float32 when added) for :meth:`param`,
    :meth:`gemm` and :meth:`linear`.
    """

    def __init__(self, params: Mapping[str, F64] | None = None) -> None:
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.params = params or {}
        self._names: set[str] = set()

    def const(self, name: str, value: npt.ArrayLike, dtype: npt.DTypeLike = np.float32) -> str:
        """Add an initializer (cast to ``dtype``) and return its name."""
        self._claim(name)
        array = np.array(value, dtype=dtype, order="C")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def param(self, name: str) -> str:
        """Add the weight ``params[name]`` as a float32 initializer."""
        return self.const(name, self.params[name])

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        """Add one node with one output named like the node; return the output name."""
        self._claim(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def gemm(self, x: str, name: str) -> str:
        """``x @ {name}.weight + {name}.bias`` for 2-D ``x`` as one Gemm; weight is [in, out]."""
        return self.op("Gemm", [x, self.param(f"{name}.weight"), self.param(f"{name}.bias")], name)

    def linear(self, x: str, name: str) -> str:
        """``x @ {name}.weight + {name}.bias`` as MatMul then Add (any rank), the pattern ORT fuses."""
        product = self.op("MatMul", [x, self.param(f"{name}.weight")], f"{name}/MatMul")
        return self.op("Add", [product, self.param(f"{name}.bias")], f"{name}/Add")

    def model(
        self,
        inputs: Sequence[ValueInfoProto],
        outputs: Sequence[ValueInfoProto],
        *,
        graph_name: str,
        doc: str,
    ) -> ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, list(inputs), list(outputs), self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="kiln.examples",
            producer_version=GENERATOR_VERSION,
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        return model

    def _claim(self, name: str) -> None:
        if name in self._names:
            raise ValueError(f"duplicate tensor name {name!r} in example graph")
        self._names.add(name)
