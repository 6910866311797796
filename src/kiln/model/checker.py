"""``onnx.checker`` with strict shape inference, its failures turned into ``Problem``s."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import onnx.shape_inference

from kiln.errors import Problem
from kiln.model.external import READ_BEFORE_VALIDATION_BYTES
from kiln.model.walk import is_external, tensors

_FIX_CHECKER = (
    "repair the graph where it is produced (the exporter or the script that built it) and save it "
    "again; onnx.checker.check_model(path, full_check=True) reproduces this"
)
_FIX_SHAPES = (
    "make the declared shapes and types agree with what the operators compute (export again, or "
    "remove stale value_info); onnx.shape_inference.infer_shapes(model, strict_mode=True) reproduces this"
)
_FIX_UNREAD = (
    "load the model with kiln.model.load.load_model, which reads external tensors of up to "
    f"{READ_BEFORE_VALIDATION_BYTES // 1024} KiB before validating; store a larger one inside the "
    ".onnx file (onnx.save(..., save_as_external_data=True, size_threshold=N) with N above its size)"
)
_UNREAD_EXTERNAL = re.compile(r"Cannot parse data from external tensors.*?for tensor: (\S+)")
_SHAPE_ERROR = re.compile(r"\(op_type:([^,]*), node name: ([^)]*)\): (.*)")
_NODE_CONTEXT = re.compile(r"[Nn]ame: (\S*) OpType: (\S+)")


def checker_problems(model: Any, path: Path | None, serialized: bytes | None = None) -> list[Problem]:
    """Run ``onnx.checker.check_model(full_check=True)`` (checker plus strict shape inference).

    A self-contained model that fits in one protobuf (< 2 GiB) is checked in memory: from
    ``serialized`` (the model's bytes, as read from its file) when given, else serialized here.

    A model with tensors still in external data (the loader reads only the small ones before
    validating) needs ``path``, whose external-data locations the caller has already confined to
    the model's folder: the checker reads the file there (it resolves external locations against
    the file's folder), and strict shape inference runs on the in-memory model, which holds the
    small tensors that shape inference reads (``Reshape`` shapes, ``Unsqueeze`` axes, ``Slice``
    bounds...). The file still keeps those external, and ONNX's shape inference does not read
    external data, so checking the file alone would fail on every such node.
    """
    if not any(is_external(t) for t in tensors(model)):
        target = serialized if serialized is not None else _serialized(model)
        if target is not None:
            return _run(onnx.checker.check_model, target, full_check=True)
    if path is None:
        return [
            Problem(
                "model",
                "is too large or has unloaded external data, so it cannot be checked in memory",
                "validate it through its path (validate(model, path=...)) or load it with load_model",
            )
        ]
    skeleton = _serialized(model)
    if skeleton is None:  # over 2 GiB even without its external data: the file alone it is
        return _run(onnx.checker.check_model, str(path), full_check=True)
    problems = _run(onnx.checker.check_model, str(path), full_check=False)
    if problems:
        return problems
    return _run(onnx.shape_inference.infer_shapes, skeleton, check_type=True, strict_mode=True)


def _run(check: Callable[..., object], target: Any, **options: bool) -> list[Problem]:
    """``check(target, **options)``'s failure as problems; none when it passes."""
    try:
        check(target, **options)
    except onnx.shape_inference.InferenceError as exc:
        return _shape_problems(str(exc))
    except onnx.checker.ValidationError as exc:
        return [_checker_problem(str(exc))]
    except (ValueError, OSError) as exc:
        return [Problem("model", f"cannot be checked: {exc}", _FIX_CHECKER)]
    return []


def _serialized(model: Any) -> bytes | None:
    """The model's bytes, serialized once for the checker, or ``None`` past protobuf's 2 GiB.
    (Asking ``ByteSize()`` first would cost as much as serializing.)"""
    try:
        data: bytes = model.SerializeToString()
    except ValueError:  # protobuf refuses messages over 2 GiB
        return None
    return data if len(data) <= onnx.checker.MAXIMUM_PROTOBUF else None


def _shape_problems(message: str) -> list[Problem]:
    problems = []
    for match in _SHAPE_ERROR.finditer(message):
        op_type, name, what = (part.strip() for part in match.groups())
        fix, unread = _FIX_SHAPES, _UNREAD_EXTERNAL.search(what)
        if unread:
            fix = _FIX_UNREAD
            what = f"needs the values of tensor {unread.group(1)!r}, which are still in external data"
        problems.append(Problem(_node(name, op_type), f"fails strict shape inference: {what}", fix))
    if not problems:
        problems.append(Problem("graph", f"fails strict shape inference: {_squash(message)}", _FIX_SHAPES))
    return problems


def _checker_problem(message: str) -> Problem:
    what, _, context = message.partition("==> Context:")
    match = _NODE_CONTEXT.search(message)
    where = _node(match.group(1), match.group(2)) if match else "graph"
    if not what.strip():
        what = context
    return Problem(where, f"fails the ONNX checker: {_squash(what)}", _FIX_CHECKER)


def _node(name: str, op_type: str) -> str:
    return f"node {name!r} ({op_type})" if name else f"a {op_type} node without a name"


def _squash(text: str) -> str:
    return " ".join(text.split())
