"""FP16 and BF16 conversion: floats become 16-bit inside the graph, inputs and outputs stay fp32.

FP16 uses ONNX Runtime's converter with ``Cast`` on the block list: converting a Cast's target
type can leave its output typed fp16 where a neighbour expects fp32, and ONNX Runtime then refuses
the model. BF16 is the same conversion retyped to bfloat16 (weights rounded from the fp32 originals).
ONNX Runtime's CPU provider has no bf16 kernels for MatMul/Add/Relu..., so a bf16 model is for the
GPU backends; on a CPU-only ONNX Runtime build kiln refuses it with ``BuildError``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

from kiln.compile.precision._graph import copy_model, sort_topologically, verify_loads
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, describe

_FP16 = onnx.TensorProto.FLOAT16
_BF16 = onnx.TensorProto.BFLOAT16
_DTYPE_ATTRIBUTES = ("to", "dtype")


def convert_float16(model: onnx.ModelProto, spec: BuildSpec) -> onnx.ModelProto:
    """``model`` (not modified) with floats converted to fp16 except the kept nodes and op types."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(
        copy_model(model),
        keep_io_types=True,
        op_block_list=[*DEFAULT_OP_BLOCK_LIST, "Cast", *spec.keep_fp32_op_types],
        node_block_list=list(spec.keep_fp32_nodes),
    )
    assert isinstance(converted, onnx.ModelProto)
    sort_topologically(converted.graph)
    return converted


def convert_bfloat16(model: onnx.ModelProto, spec: BuildSpec) -> onnx.ModelProto:
    """``model`` (not modified) converted to bf16: the fp16 conversion, retyped to bfloat16."""
    originals = {t.name: t for t in model.graph.initializer}
    converted = convert_float16(model, spec)
    _retype_graph(converted.graph, originals)
    return converted


def _retype_graph(graph: onnx.GraphProto, originals: dict[str, onnx.TensorProto]) -> None:
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == _FP16:
            graph.initializer[index].CopyFrom(_to_bfloat16(tensor, originals.get(tensor.name)))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == _FP16:
            value.type.tensor_type.elem_type = _BF16
    for node in graph.node:
        for attr in node.attribute:
            _retype_attribute(attr, originals)


def _retype_attribute(attr: onnx.AttributeProto, originals: dict[str, onnx.TensorProto]) -> None:
    if attr.type == onnx.AttributeProto.INT and attr.name in _DTYPE_ATTRIBUTES and attr.i == _FP16:
        attr.i = _BF16
    elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == _FP16:
        attr.t.CopyFrom(_to_bfloat16(attr.t, None))
    elif attr.type == onnx.AttributeProto.GRAPH:
        _retype_graph(attr.g, originals)
    elif attr.type == onnx.AttributeProto.GRAPHS:
        for sub in attr.graphs:
            _retype_graph(sub, originals)


def _to_bfloat16(tensor: onnx.TensorProto, original: onnx.TensorProto | None) -> onnx.TensorProto:
    source = original if original is not None and original.data_type == onnx.TensorProto.FLOAT else tensor
    values = numpy_helper.to_array(source).astype(np.float32)
    bf16 = values.astype(onnx.helper.tensor_dtype_to_np_dtype(_BF16))
    return numpy_helper.from_array(bf16, tensor.name)


def convert_16bit(model: onnx.ModelProto, spec: BuildSpec, kind: Literal["fp16", "bf16"]) -> onnx.ModelProto:
    """Convert and verify: the result must load in ONNX Runtime (for the ``onnxruntime`` backend).

    For other backends a runtime that merely lacks kernels is tolerated once the ONNX checker
    accepts the graph; a graph ONNX Runtime calls invalid is always a ``BuildError``.
    """
    converted = convert_float16(model, spec) if kind == "fp16" else convert_bfloat16(model, spec)
    missing_kernel = verify_loads(converted, what=kind, providers=_providers())
    if missing_kernel is None:
        return converted
    if spec.backend == "onnxruntime":
        raise BuildError(
            describe(
                f"ONNX Runtime here has no {kind} kernel for this model",
                seen=missing_kernel[-300:],
                fix=f"{kind} is for the GPU backends (--backend tensorrt or torch); "
                "on CPU use --precision int8 or fp32",
            )
        )
    try:
        onnx.checker.check_model(converted, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise BuildError(
            describe(f"the {kind} model is not valid ONNX", seen=str(exc)[-300:], fix="use --keep-fp32 NODE")
        ) from None
    return converted


def _providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
