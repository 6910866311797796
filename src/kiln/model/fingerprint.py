"""Structure and weights hashes of an ONNX model.

``structure_hash`` is the SHA-256 of a *skeleton* of the model: every field of every message, except

* the values of initializers (dense and sparse; their names, dtypes and shapes stay),
* how any tensor is stored (``raw_data`` or typed fields, inline or external data),
* doc strings, ``metadata_props`` and producer metadata (producer name/version, model domain and
  version).

Tensors inside node attributes (a ``Constant``'s value) are part of the structure, by value: they
are usually shapes and axes, and a changed one needs a new engine, not a refit. Opset imports are
sorted, ``ai.onnx`` spelled ``""``, and initializers ordered by name, as their order means nothing.

``weights_hash`` is the SHA-256 over every initializer (in every subgraph) of its scope, name,
dtype, dims and numeric values. Values are hashed as little-endian element bytes after decoding,
so the same numbers hash the same however ONNX stored them; a sparse initializer is hashed as its
dense shape plus its (linear index, value) pairs in index order, whatever its index layout.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import numpy_helper

from kiln.errors import ModelError, Problem
from kiln.model.source import Fingerprint
from kiln.model.walk import is_external, normalize_domain, subgraphs, tensors

_IGNORED_FIELDS = frozenset({"doc_string", "metadata_props"})
_IGNORED_MODEL_FIELDS = frozenset({"producer_name", "producer_version", "domain", "model_version"})
_SCALARS = (str, bytes, int, float, bool)


def fingerprint(model: onnx.ModelProto) -> Fingerprint:
    """``structure_hash`` ignores initializer values but not names, shapes, dtypes, topology,
    attributes, opsets or IR version; ``weights_hash`` covers the values. Stable across
    re-serialization.

    Raises ``ModelError`` when a tensor's external data is not loaded (load the model with
    ``load_model`` or ``onnx.load``, which bring the data in).
    """
    unloaded = [t.name for t in tensors(model) if is_external(t)]
    if unloaded:
        raise ModelError(
            [
                Problem(
                    f"tensor {unloaded[0]!r}"
                    + (f" and {len(unloaded) - 1} more" if len(unloaded) > 1 else ""),
                    "has external data that is not loaded, so its values cannot be hashed",
                    "load the model with kiln.model.load.load_model (or onnx.load) before fingerprinting",
                )
            ]
        )
    opsets = tuple(
        sorted((normalize_domain(o.domain) or "ai.onnx", int(o.version)) for o in model.opset_import)
    )
    return Fingerprint(
        structure_hash=structure_hash(model),
        weights_hash=weights_hash(model),
        opsets=opsets,
        ir_version=int(model.ir_version),
    )


def structure_hash(model: onnx.ModelProto) -> str:
    """Hex SHA-256 of the model's skeleton (see the module docstring)."""
    skeleton = _skeleton(model)
    return hashlib.sha256(skeleton.SerializeToString(deterministic=True)).hexdigest()


def weights_hash(model: onnx.ModelProto) -> str:
    """Hex SHA-256 over every initializer's scope, name, dtype, dims and values."""
    digest = hashlib.sha256()
    for scope, graph in _scoped_graphs(model.graph, "graph"):
        for tensor in sorted(graph.initializer, key=_initializer_name):
            _frame(digest, b"dense", scope, tensor.name, tensor.data_type, list(tensor.dims))
            digest.update(tensor_digest(tensor))
        for sparse in sorted(graph.sparse_initializer, key=_initializer_name):
            _frame(digest, b"sparse", scope, sparse.values.name, sparse.values.data_type, list(sparse.dims))
            digest.update(sparse_digest(sparse))
    return digest.hexdigest()


def _scoped_graphs(graph: Any, scope: str) -> Iterator[tuple[str, Any]]:
    """Every graph with a scope naming the node and attribute that holds it."""
    yield scope, graph
    for index, node in enumerate(graph.node):
        for number, sub in enumerate(subgraphs(node)):
            yield from _scoped_graphs(sub, f"{scope}/{node.name or index}:{node.op_type}[{number}]")


def _frame(digest: Any, *parts: object) -> None:
    """Feed ``parts`` into ``digest`` length-prefixed, so no two different sequences collide."""
    for part in parts:
        data = part if isinstance(part, bytes) else repr(part).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)


def tensor_digest(tensor: Any) -> bytes:
    """SHA-256 (raw digest) of a tensor's decoded values; the storage form does not matter."""
    return hashlib.sha256(_value_bytes(numpy_helper.to_array(tensor))).digest()


def sparse_digest(sparse: Any) -> bytes:
    """SHA-256 of a sparse tensor as dense dims plus (linear index, value) pairs sorted by index."""
    values = numpy_helper.to_array(sparse.values).reshape(-1)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dims = tuple(int(d) for d in sparse.dims)
    if indices.ndim == 2:  # [nnz, rank] coordinates -> linear indices
        indices = np.ravel_multi_index(tuple(indices.T), dims).astype(np.int64)
    indices = indices.reshape(-1)
    order = np.argsort(indices, kind="stable")
    digest = hashlib.sha256()
    _frame(digest, list(dims))
    digest.update(_value_bytes(indices[order]))
    digest.update(_value_bytes(values[order]))
    return digest.digest()


def _value_bytes(array: np.ndarray[Any, Any]) -> bytes:
    if array.dtype == np.object_:  # STRING tensors: each element length-prefixed
        parts = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            parts += [len(data).to_bytes(8, "little"), data]
        return b"".join(parts)
    array = np.ascontiguousarray(array)
    if sys.byteorder == "big" and array.dtype.itemsize > 1:
        array = array.byteswap()
    return array.tobytes()


def _skeleton(message: Any, initializer: bool = False) -> Any:
    """A copy of ``message`` with values, storage details and docs removed (see module docstring).

    Built field by field, so a multi-gigabyte initializer is never copied.
    """
    if isinstance(message, onnx.TensorProto):
        return _tensor_skeleton(message, with_values=not initializer)
    if isinstance(message, onnx.SparseTensorProto):
        return _sparse_skeleton(message, with_values=not initializer)
    out = type(message)()
    for field, value in message.ListFields():
        name = field.name
        target = getattr(out, name)
        if name in _IGNORED_FIELDS or (
            isinstance(message, onnx.ModelProto) and name in _IGNORED_MODEL_FIELDS
        ):
            continue
        if name == "opset_import":
            target.extend(_opset_ids(value))
        elif isinstance(message, onnx.GraphProto) and name in ("initializer", "sparse_initializer"):
            target.extend(_skeleton(item, initializer=True) for item in sorted(value, key=_initializer_name))
        elif isinstance(value, Message):
            target.CopyFrom(_skeleton(value))
        elif isinstance(value, _SCALARS):
            setattr(out, name, value)
        elif field.message_type is not None:
            target.extend(_skeleton(item) for item in value)
        else:
            target.extend(value)
    return out


def _initializer_name(tensor: Any) -> str:
    return str(tensor.values.name if isinstance(tensor, onnx.SparseTensorProto) else tensor.name)


def _opset_ids(opset_import: Any) -> list[Any]:
    pairs = sorted((normalize_domain(o.domain), int(o.version)) for o in opset_import)
    return [onnx.OperatorSetIdProto(domain=domain, version=version) for domain, version in pairs]


def _tensor_skeleton(tensor: Any, *, with_values: bool) -> Any:
    out = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
    if with_values:
        out.raw_data = tensor_digest(tensor)
    return out


def _sparse_skeleton(sparse: Any, *, with_values: bool) -> Any:
    values = onnx.TensorProto(name=sparse.values.name, data_type=sparse.values.data_type)
    out = onnx.SparseTensorProto(values=values, dims=sparse.dims)
    if with_values:
        out.values.raw_data = sparse_digest(sparse)
    return out
