"""Collecting activation statistics: run the model with ONNX Runtime, the tensors to quantize added
as graph outputs, batch by batch, into one :class:`HistogramCollector` per tensor."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import onnx

from kiln.compile.backends.base import Progress
from kiln.compile.data import SampleSet
from kiln.compile.precision._graph import copy_model
from kiln.compile.precision.calibration import Histogram, HistogramCollector
from kiln.errors import BuildError, ConfigError, describe
from kiln.types import Array, TensorSpec

log = logging.getLogger(__name__)

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
MAX_CALIBRATION_BATCH = 64


def quantizable_op_types() -> frozenset[str]:
    """Op types ONNX Runtime's QDQ quantizer handles (the ones whose tensors need ranges)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return frozenset(QDQRegistry) | frozenset(QLinearOpsRegistry)


def tensors_to_calibrate(model: onnx.ModelProto, op_types: Iterable[str]) -> dict[str, int]:
    """Float activations (not initializers) read or written by nodes of ``op_types``, with their
    element type. ``model`` must carry inferred types (``value_info``)."""
    wanted = frozenset(op_types)
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output, *graph.input]}
    initializers = {t.name for t in graph.initializer}
    found: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in wanted:
            continue
        for name in [*node.input, *node.output]:
            if name and name not in initializers and types.get(name) in _FLOAT_TYPES:
                found[name] = types[name]
    return dict(sorted(found.items()))


def augment(model: onnx.ModelProto, tensors: dict[str, int]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs every tensor in ``tensors``."""
    augmented = copy_model(model)
    present = {o.name for o in augmented.graph.output}
    for name, elem_type in tensors.items():
        if name not in present:
            augmented.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
    return augmented


def calibration_batch_size(specs: Sequence[TensorSpec], max_batch_size: int) -> tuple[int, bool]:
    """(batch size, whether it is fixed by the model). A model whose inputs all declare the same
    fixed first dimension gets exactly that; otherwise up to ``max_batch_size`` (at most 64)."""
    firsts = {s.shape[0] for s in specs if s.shape}
    if len(firsts) == 1 and (fixed := next(iter(firsts))) > 0:
        return fixed, True
    return max(1, min(max_batch_size, MAX_CALIBRATION_BATCH)), False


def _batches(samples: SampleSet, size: int, fixed: bool) -> Iterator[dict[str, Array]]:
    for batch in samples.batches(size):
        if fixed and len(next(iter(batch.values()))) != size:
            return  # the model takes only full batches
        yield batch


def collect_histograms(
    model: onnx.ModelProto,
    tensors: dict[str, int],
    samples: SampleSet,
    *,
    specs: Sequence[TensorSpec],
    max_batch_size: int,
    num_bins: int,
    histogram: bool,
    progress: Progress | None = None,
) -> dict[str, Histogram]:
    """Run ``samples`` through ``model`` and gather each tensor's values (``histogram=False``: only
    min/max). Calls ``progress("calibrating", done, total)`` after every batch."""
    import onnxruntime as ort

    size, fixed = calibration_batch_size(specs, max_batch_size)
    total = len(samples) // size if fixed else -(-len(samples) // size)
    if total == 0:
        raise ConfigError(
            describe(
                f"the model takes batches of exactly {size} samples, calibration has {len(samples)}",
                fix=f"give at least {size} calibration samples",
            )
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(
        augment(model, tensors).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = list(tensors)
    collectors = {n: HistogramCollector(num_bins, histogram=histogram, name=n) for n in names}
    for done, batch in enumerate(_batches(samples, size, fixed), start=1):
        try:
            outputs = session.run(names, batch)
        except Exception as exc:  # onnxruntime's own error classes
            raise BuildError(
                describe(
                    "the model failed on a calibration batch", seen=str(exc)[-300:], fix="check the samples"
                )
            ) from None
        for name, value in zip(names, outputs, strict=True):
            collectors[name].add(value)
        if progress is not None:
            progress("calibrating", done, total)
    log.debug("collected %d tensors over %d batches of %d", len(names), total, size)
    return {name: c.result() for name, c in collectors.items()}
