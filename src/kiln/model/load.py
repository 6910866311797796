"""Loading a model file into a validated ModelSource.

The steps, each refusing bad input with a ``ModelError`` that names the file and the fix:

1. the path must be a non-empty regular file within the size limit that parses as an ONNX model
   (``.pt2`` files belong to the torch backend);
2. external data is resolved without being read: every location must stay inside the model's own
   folder (no ``..``, no absolute path, no symlink pointing out) and name an existing file;
3. the model is validated (``kiln.model.validate``), every problem collected into one error; the
   small external tensors (shape inputs such as a ``Reshape`` shape) are read first, as shape
   inference needs their values;
4. only then is the rest of the external data read into the in-memory model, and the fingerprint
   computed.

:func:`runtime_input` reads a model file under the same rules for a runtime that opens it itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from kiln.errors import ModelError, Problem
from kiln.model.external import READ_BEFORE_VALIDATION_BYTES, load_external_data, plan_external_data
from kiln.model.fingerprint import fingerprint
from kiln.model.source import ModelSource
from kiln.model.tensors import signature
from kiln.model.validate import ModelLimits, OpSupport, validate

KEEP_SERIALIZED_BYTES = 256 * 1024 * 1024
"""A self-contained model file up to this size keeps its bytes in ``ModelSource.serialized``."""

_FIX_REEXPORT = (
    "point to an ONNX model saved completely (onnx.save or torch.onnx.export); if it is still being "
    "copied, wait until the copy is complete"
)


def load_model(
    path: Path, *, limits: ModelLimits | None = None, op_support: OpSupport | None = None
) -> ModelSource:
    """Load, validate and fingerprint the model at ``path`` (``.onnx``; ``.pt2`` for the torch backend).

    Raises ``ModelError`` listing every problem found (not a file, not ONNX, truncated, checker
    failures, unsupported ops, external data escaping the model's folder, absurd dims...).

    External data is resolved relative to the folder of ``path`` (as given, not through a symlink
    to the model file) and loaded into ``ModelSource.model``; ``size_bytes`` counts the model file
    plus each external data file once. ``op_support`` is the target backend's operator coverage
    (``None`` skips that check); ``limits`` defaults to ``ModelLimits()``.
    """
    path = Path(path)
    limits = limits or ModelLimits()
    model, data = _read_onnx(path, limits)
    file_bytes = len(data)
    plan = plan_external_data(model, path.parent)
    whole = not plan.reads and not plan.problems
    serialized = data if whole and file_bytes <= KEEP_SERIALIZED_BYTES else None
    size_bytes = file_bytes + plan.size_bytes
    # Small tensors (shape inputs) are read before validation, which needs their values: only
    # once every location is confined to the model's folder and the total size is within the
    # limit. The large ones wait until the model is known to be valid.
    found = [*plan.problems]
    if not found and size_bytes <= limits.max_file_bytes:
        found = load_external_data(plan, at_most=READ_BEFORE_VALIDATION_BYTES)
    validate(
        model,
        path=path,
        limits=limits,
        op_support=op_support,
        size_bytes=size_bytes,
        found=tuple(found),
        run_checker=not found,
        serialized=serialized,
    )
    problems = load_external_data(plan)
    if problems:
        raise ModelError(problems, path=str(path))
    described = signature(model.graph)
    return ModelSource(
        path=path,
        format="onnx",
        fingerprint=fingerprint(model),
        inputs=described.inputs,
        outputs=described.outputs,
        size_bytes=size_bytes,
        model=model,
        serialized=serialized,
    )


def runtime_input(path: Path, *, limits: ModelLimits | None = None) -> bytes | str:
    """What to hand a runtime that opens an ONNX model from a file or from bytes (ONNX Runtime's
    ``InferenceSession``) for the model at ``path``, read under ``load_model``'s file and
    external-data rules but not validated.

    A self-contained model comes back as its file's bytes. A model with external data comes back
    as one self-contained protobuf, its external data read in (every location confined to the
    model's folder first): opened from its path, ONNX Runtime's shape inference would not see the
    values of small external tensors such as a ``Reshape`` shape or ``Unsqueeze`` axes, and fail.
    Only a model too large for one protobuf (2 GiB) comes back as ``path`` (a string, as
    ``InferenceSession`` takes it), for the runtime to read its external data itself.

    Raises ``ModelError`` for a file that is not an ONNX model or whose external data is refused.
    """
    path = Path(path)
    limits = limits or ModelLimits()
    model, data = _read_onnx(path, limits)
    plan = plan_external_data(model, path.parent)
    if plan.problems:
        raise ModelError(list(plan.problems), path=str(path))
    if not plan.reads:
        return data
    if len(data) + plan.size_bytes > limits.max_file_bytes:
        raise _refuse(
            path,
            f"is {len(data) + plan.size_bytes} bytes with its external data, over the limit of "
            f"{limits.max_file_bytes}",
            "shrink the model or raise ModelLimits.max_file_bytes",
        )
    if len(data) + sum(read.num_bytes for read in plan.reads) > onnx.checker.MAXIMUM_PROTOBUF:
        return str(path)
    problems = load_external_data(plan)
    if problems:
        raise ModelError(problems, path=str(path))
    return bytes(model.SerializeToString())


def _refuse(path: Path, what: str, fix: str) -> ModelError:
    return ModelError([Problem(str(path), what, fix)], path=str(path))


def _read_onnx(path: Path, limits: ModelLimits) -> tuple[Any, bytes]:
    """The parsed model (external data not loaded) and the model file's bytes."""
    _check_file(path, limits)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror})", "check the file's permissions") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RecursionError):
        what = "is not an ONNX model: protobuf cannot parse it"
        if data[:1] == b"\x08":  # starts like an ONNX file (ir_version), so most likely cut short
            what = "looks like an ONNX model but is truncated or corrupt: protobuf cannot parse it"
        raise _refuse(path, what, _FIX_REEXPORT) from None
    if not model.HasField("graph"):
        what = "is not an ONNX model (it holds no graph)"
        if model.ir_version:
            what = "is an incomplete ONNX model (it holds no graph; truncated?)"
        raise _refuse(path, what, _FIX_REEXPORT)
    return model, data


def _check_file(path: Path, limits: ModelLimits) -> int:
    if path.suffix.lower() == ".pt2":
        raise _refuse(
            path,
            "is a PyTorch export (.pt2), which the torch backend loads, not this ONNX loader",
            "build it with the torch backend, or export the model to ONNX (torch.onnx.export) and "
            "load the .onnx file",
        )
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.onnx"))
        hint = f" (found: {', '.join(found)})" if found else ""
        raise _refuse(path, "is a folder, not a model file", f"point to the .onnx file inside it{hint}")
    if not path.exists():
        raise _refuse(path, "does not exist", "check the path; it should name a .onnx model file")
    if not path.is_file():
        raise _refuse(path, "is not a regular file", "point to a .onnx model file")
    size = path.stat().st_size
    if size == 0:
        raise _refuse(path, "is empty (0 bytes)", _FIX_REEXPORT)
    if size > limits.max_file_bytes:
        raise _refuse(
            path,
            f"is {size} bytes, over the limit of {limits.max_file_bytes}",
            "shrink the model or raise ModelLimits.max_file_bytes",
        )
    return size
