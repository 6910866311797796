"""``onnx.checker`` with strict shape inference, its failures turned into ``Problem``s."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import onnx
import onnx.shape_inference

from kiln.errors import Problem
from kiln.model.walk import is_external, tensors

_FIX_CHECKER = (
    "repair the graph where it is produced (the exporter or the script that built it) and save it "
    "again; onnx.checker.check_model(path, full_check=True) reproduces this"
)
_FIX_SHAPES = (
    "make the declared shapes and types agree with what the operators compute (export again, or "
    "remove stale value_info); onnx.shape_inference.infer_shapes(model, strict_mode=True) reproduces this"
)
_SHAPE_ERROR = re.compile(r"\(op_type:([^,]*), node name: ([^)]*)\): (.*)")
_NODE_CONTEXT = re.compile(r"[Nn]ame: (\S*) OpType: (\S+)")


def checker_problems(model: Any, path: Path | None, serialized: bytes | None = None) -> list[Problem]:
    """Run ``onnx.checker.check_model(full_check=True)`` (checker plus strict shape inference).

    The model is checked in memory when it is self-contained and fits in one protobuf (< 2 GiB):
    from ``serialized`` (the model's bytes, as read from its file) when given, else serialized
    here; otherwise through ``path`` (the checker then reads the file, not the external data),
    whose external-data locations the caller has already confined to the model's folder.
    """
    target: Any = None
    if not any(is_external(t) for t in tensors(model)):
        target = serialized if serialized is not None else _serialized(model)
    if target is None:
        if path is None:
            return [
                Problem(
                    "model",
                    "is too large or has unloaded external data, so it cannot be checked in memory",
                    "validate it through its path (validate(model, path=...)) or load it with load_model",
                )
            ]
        target = str(path)
    try:
        onnx.checker.check_model(target, full_check=True)
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
        problems.append(Problem(_node(name, op_type), f"fails strict shape inference: {what}", _FIX_SHAPES))
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
