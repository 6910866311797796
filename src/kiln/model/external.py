"""External data of an ONNX model: confine every ``location`` to the model's own folder, then load.

:func:`plan_external_data` only looks at names and file metadata (``stat``), so a location that
escapes the folder (``..``, an absolute path, a symlink pointing out) is refused before any byte
outside the folder is read. :func:`load_external_data` then reads the planned ranges into the
in-memory model.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO

import onnx

from kiln.errors import Problem
from kiln.model.walk import is_external, tensors

READ_BEFORE_VALIDATION_BYTES = 64 * 1024
"""External tensors up to this size are read before a model is validated: shape inference and the
checker need the values of shape inputs (``Reshape`` shapes, ``Unsqueeze`` axes, ``Slice`` bounds),
which ``onnx.save(..., size_threshold=0)`` stores externally too."""

_FIX_LOCATION = (
    "keep external data files inside the model's folder and name them relative to it "
    "(onnx.save(model, path, save_as_external_data=True, location='weights.bin'))"
)
_FIX_RESAVE = "the weights file does not match the model; save the model and its external data again"


@dataclass(frozen=True, slots=True)
class ExternalRead:
    """One tensor's bytes: ``length`` bytes of ``file`` from ``offset`` (``None`` = to the end);
    ``num_bytes`` is how many that is, judged when planning."""

    tensor: Any
    file: Path
    offset: int
    length: int | None
    num_bytes: int


@dataclass(frozen=True, slots=True)
class ExternalPlan:
    """What loading the external data would read, the distinct files' total size, and the problems."""

    reads: tuple[ExternalRead, ...]
    files: tuple[Path, ...]
    size_bytes: int
    problems: tuple[Problem, ...]


def plan_external_data(model: Any, folder: Path) -> ExternalPlan:
    """Resolve every external-data location of ``model`` against ``folder`` without reading data."""
    root = folder.resolve()
    reads: list[ExternalRead] = []
    problems: list[Problem] = []
    sizes: dict[Path, int] = {}
    for tensor in tensors(model):
        if not is_external(tensor):
            continue
        result = _plan_one(tensor, folder, root, sizes)
        if isinstance(result, Problem):
            problems.append(result)
        else:
            reads.append(result)
    return ExternalPlan(tuple(reads), tuple(sizes), sum(sizes.values()), tuple(problems))


def _plan_one(tensor: Any, folder: Path, root: Path, sizes: dict[Path, int]) -> ExternalRead | Problem:
    where = f"tensor {tensor.name!r}"
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    try:
        offset = int(info.get("offset") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError:
        seen = f"offset {info.get('offset')!r}, length {info.get('length')!r}"
        return Problem(where, f"has a non-numeric external-data offset or length ({seen})", _FIX_RESAVE)
    located = _locate(location, folder, root)
    if not isinstance(located, Path):
        what, fix = located
        return Problem(where, what, fix)
    size = sizes.setdefault(located, located.stat().st_size)
    end = offset + (length if length is not None else max(size - offset, 0))
    if offset < 0 or (length is not None and length < 0) or end > size:
        what = f"needs bytes {offset}..{end} of {location!r}, which has {size} bytes"
        return Problem(where, what, _FIX_RESAVE)
    return ExternalRead(tensor, located, offset, length, end - offset)


def _locate(location: str, folder: Path, root: Path) -> Path | tuple[str, str]:
    """The real path of an external data file inside ``root``, or (what is wrong, the fix)."""
    refused = _refuse_location(location)
    if refused:
        return f"{refused} (location: {location!r})", _FIX_LOCATION
    named = folder / location
    try:
        resolved = named.resolve()
    except (OSError, RuntimeError) as exc:
        return f"external data {location!r} cannot be resolved ({exc})", _FIX_LOCATION
    if not resolved.is_relative_to(root):
        what = f"external data {location!r} resolves to {str(resolved)!r}, outside the model's folder"
        return what, "replace the symlink by the file itself; " + _FIX_LOCATION
    if named.is_symlink():
        what = f"external data {location!r} is a symbolic link (to {str(resolved)!r})"
        return what, "replace the link by the file itself; ONNX refuses linked external data"
    if not resolved.exists():
        what = f"external data file {location!r} is missing from {str(folder)!r}"
        return what, "copy the weights file next to the model file (it must travel with the .onnx file)"
    if not resolved.is_file():
        return f"external data {location!r} is not a regular file", _FIX_LOCATION
    return resolved


def _refuse_location(location: str) -> str | None:
    """Why a location may not be used, judged on its text alone."""
    if not location:
        return "has external data without a location"
    if "\x00" in location:
        return "has an external-data location holding a NUL character"
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or location.startswith(("/", "\\")):
        return "has an absolute external-data location"
    if ".." in posix.parts or ".." in windows.parts:
        return "has an external-data location that climbs out with '..'"
    return None


def load_external_data(plan: ExternalPlan, *, at_most: int | None = None) -> list[Problem]:
    """Read every planned range into its tensor (as ``raw_data``) and mark it inline.

    With ``at_most``, only ranges of up to that many bytes are read (small tensors such as the
    shape inputs of ``Reshape`` or ``Expand``, which shape inference must see; a range without a
    ``length`` runs to the end of its file); the others stay external for a later call, which skips
    what is already inline.

    Returns problems for files that changed since planning (a short read); tensors read so far
    stay loaded, so on problems the caller should discard the model.
    """
    problems: list[Problem] = []
    with contextlib.ExitStack() as stack:
        handles: dict[Path, BinaryIO] = {}
        for read in plan.reads:
            if not is_external(read.tensor) or not _within(read, at_most):
                continue
            handle = handles.get(read.file)
            if handle is None:
                handle = handles[read.file] = stack.enter_context(read.file.open("rb"))
            handle.seek(read.offset, os.SEEK_SET)
            data = handle.read() if read.length is None else handle.read(read.length)
            if read.length is not None and len(data) != read.length:
                what = f"read {len(data)} of {read.length} bytes of {read.file.name!r} (the file changed)"
                problems.append(Problem(f"tensor {read.tensor.name!r}", what, "load the model again"))
                continue
            _set_inline(read.tensor, data)
    return problems


def _within(read: ExternalRead, at_most: int | None) -> bool:
    return at_most is None or read.num_bytes <= at_most


def _set_inline(tensor: Any, data: bytes) -> None:
    tensor.raw_data = data
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT
