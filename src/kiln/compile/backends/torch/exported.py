"""PyTorch ``ExportedProgram`` sources (``model.pt2``, written by ``torch.export.save``).

``load_exported`` reads such a file into a ``ModelSource`` the way ``kiln.model.load.load_model``
reads ONNX: its signature (user inputs and outputs, dynamic dimensions as ``-1``) and a fingerprint
whose ``structure_hash`` covers the graph code, the signature and every weight's name, shape and
dtype, and whose ``weights_hash`` covers the weight values. A retrain exported from the same code
keeps the structure hash, so the engine cache refits it.

Outputs are named after the keys of a returned dict, else ``output_0``, ``output_1``...; programs
must take and return tensors (nested in tuples, lists or dicts), nothing else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import ModelError, Problem
from kiln.model.source import Fingerprint, ModelSource
from kiln.types import DataType, TensorSpec

if TYPE_CHECKING:
    import torch
    from torch.export import ExportedProgram

_FIX = "save the program with torch.export.save(torch.export.export(model, args), 'model.pt2')"


def _datatype(dtype: torch.dtype) -> DataType:
    import torch

    names: dict[torch.dtype, DataType] = {
        torch.float32: "FP32",
        torch.float16: "FP16",
        torch.bfloat16: "BF16",
        torch.float64: "FP64",
        torch.int64: "INT64",
        torch.int32: "INT32",
        torch.int16: "INT16",
        torch.int8: "INT8",
        torch.uint8: "UINT8",
        torch.bool: "BOOL",
    }
    return names[dtype]


def read_program(path: Path) -> ExportedProgram:
    """``torch.export.load(path)``; ``ModelError`` naming the file when it is not a program."""
    import torch

    if not path.is_file():
        raise ModelError([Problem(str(path), "does not exist or is not a file", _FIX)], path=str(path))
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        what = f"is not a readable PyTorch ExportedProgram ({type(exc).__name__}: {str(exc)[:200]})"
        raise ModelError([Problem(str(path), what, _FIX)], path=str(path)) from exc


def _spec(name: str, value: Any, where: str, path: Path) -> TensorSpec:
    import torch

    if not isinstance(value, torch.Tensor):
        what = f"{where} {name!r} is not a tensor ({type(value).__name__})"
        raise ModelError([Problem(str(path), what, "take and return tensors only")], path=str(path))
    try:
        datatype = _datatype(value.dtype)
    except KeyError:
        what = f"{where} {name!r} has dtype {value.dtype}, which kiln cannot serve"
        raise ModelError(
            [Problem(str(path), what, "use float, int or bool tensors")], path=str(path)
        ) from None
    shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
    return TensorSpec(name, datatype, shape)


def signature(program: ExportedProgram, path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of ``program``, in flattened call order."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    inputs = tuple(
        _spec(name, placeholders[name].meta.get("val"), "input", path)
        for name in program.graph_signature.user_inputs
    )
    by_name = {n.name: n for n in program.graph.nodes}
    values = [by_name[name].meta.get("val") for name in program.graph_signature.user_outputs]
    names = output_names(program, len(values))
    outputs = tuple(_spec(n, v, "output", path) for n, v in zip(names, values, strict=True))
    return inputs, outputs


def output_names(program: ExportedProgram, count: int) -> list[str]:
    spec = program.call_spec.out_spec
    context = getattr(spec, "context", None)
    if (
        isinstance(context, list | tuple)
        and len(context) == count
        and all(isinstance(k, str) for k in context)
    ):
        return [str(k) for k in context]
    return [f"output_{i}" for i in range(count)]


def fingerprint(program: ExportedProgram) -> Fingerprint:
    """Structure and weights hashes of ``program`` (see the module docstring)."""
    structure = hashlib.sha256()
    weights = hashlib.sha256()
    structure.update(program.graph_module.code.encode())
    structure.update(str(program.call_spec.in_spec).encode())
    structure.update(str(program.call_spec.out_spec).encode())
    structure.update(str(sorted(program.range_constraints.items(), key=str)).encode())
    tensors = {**program.state_dict, **program.constants}
    for name in sorted(tensors):
        tensor = tensors[name]
        if not hasattr(tensor, "shape"):
            structure.update(f"{name}:opaque".encode())
            continue
        structure.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        weights.update(name.encode())
        weights.update(
            tensor.detach().cpu().contiguous().view(-1).view(dtype=_byte_dtype()).numpy().tobytes()
        )
    return Fingerprint(structure.hexdigest(), weights.hexdigest(), (), 0)


def _byte_dtype() -> torch.dtype:
    import torch

    return torch.uint8


def load_exported(path: Path) -> ModelSource:
    """Read ``model.pt2`` into a ``ModelSource`` (``format="pt2"``, ``model=None``).

    Raises ``ModelError`` naming the file and the fix when it is not a readable ExportedProgram or
    takes or returns anything but tensors of a dtype kiln serves.
    """
    path = Path(path)
    program = read_program(path)
    inputs, outputs = signature(program, path)
    return ModelSource(
        path=path,
        format="pt2",
        fingerprint=fingerprint(program),
        inputs=inputs,
        outputs=outputs,
        size_bytes=path.stat().st_size,
        model=None,
    )
