"""Reading ONNX graph pieces for the converter: node attributes, ``Constant`` nodes, and the small
integer initializers kept as host values (the shape arithmetic a graph does on the host)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from kiln.compile.backends.torch.values import HOST_MAX_ELEMENTS, INT_TYPES, Value
from kiln.errors import BuildError, describe


def attribute(attr: onnx.AttributeProto) -> Any:
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t), attr.t.data_type
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto:
    attr = node.attribute[0]
    name = node.output[0]
    if attr.name == "value":
        tensor = onnx.TensorProto()
        tensor.CopyFrom(attr.t)
        tensor.name = name
        return tensor
    value = onnx.helper.get_attribute_value(attr)
    kinds = {
        "value_float": np.float32,
        "value_floats": np.float32,
        "value_int": np.int64,
        "value_ints": np.int64,
    }
    if attr.name not in kinds:
        raise BuildError(
            describe(f"Constant node {node.name!r} has an unsupported attribute", seen=attr.name)
        )
    return numpy_helper.from_array(np.asarray(value, dtype=kinds[attr.name]), name)


def is_host_initializer(tensor: onnx.TensorProto) -> bool:
    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    return tensor.data_type in INT_TYPES | {9} and count <= HOST_MAX_ELEMENTS


def host_value(tensor: onnx.TensorProto) -> Value:
    array = numpy_helper.to_array(tensor)
    items = array.reshape(-1).tolist()
    return items if array.ndim else items[0]
