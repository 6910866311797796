"""Model validation: collect every problem, then raise one ``ModelError``.

Checks, all run on every model so that one error lists everything to fix:

* ``onnx.checker.check_model(full_check=True)``: the checker plus strict shape inference;
* the default-domain opset lies within ``ModelLimits.min_opset..max_opset``, and the IR version is
  at most ``ModelLimits.max_ir_version`` (the newest the backend's runtime reads);
* the graph has inputs and outputs, every one a tensor of a datatype kiln can carry, with a shape;
* every declared dimension (inputs, outputs, value_info, initializers) is non-negative, and neither a
  dimension nor a static element count exceeds ``ModelLimits.max_dim_elements``;
* the model file plus its external data stays within ``ModelLimits.max_file_bytes``;
* every operator runs on the chosen backend (``OpSupport``, when one is given).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kiln.errors import ConfigError, ModelError, Problem, describe
from kiln.model.checker import checker_problems
from kiln.model.tensors import graph_inputs, signature
from kiln.model.walk import DEFAULT_DOMAIN, graphs, nodes, normalize_domain, opset_versions


class OpSupport(Protocol):
    """Which operators a backend can run; used by model validation."""

    def unsupported(self, domain: str, op_type: str, opset: int) -> str | None:
        """``None`` when the backend runs this op, else a one-line reason naming the fix."""


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """Bounds a model must stay within to be accepted."""

    max_file_bytes: int = 4 * 1024**3
    """Largest model accepted: the model file plus all its external data, in bytes."""
    max_dim_elements: int = 1 << 31
    """Largest declared dimension, and largest static element count of one tensor."""
    min_opset: int = 11
    """Oldest default-domain (``ai.onnx``) opset accepted."""
    max_opset: int = 23
    """Newest default-domain (``ai.onnx``) opset accepted."""
    max_ir_version: int | None = None
    """Newest ONNX IR version accepted (``None``: any). Backends set it to what their runtime reads:
    a model saved by a newer ``onnx`` than the runtime knows is refused here, with the fix."""

    def __post_init__(self) -> None:
        if self.max_file_bytes <= 0 or self.max_dim_elements <= 0:
            seen = f"max_file_bytes={self.max_file_bytes}, max_dim_elements={self.max_dim_elements}"
            raise ConfigError(describe("model limits must be positive", seen=seen, fix="use sizes > 0"))
        if not 1 <= self.min_opset <= self.max_opset:
            seen = f"min_opset={self.min_opset}, max_opset={self.max_opset}"
            raise ConfigError(describe("need 1 <= min_opset <= max_opset", seen=seen, fix="fix the range"))
        if self.max_ir_version is not None and self.max_ir_version < 1:
            seen = f"max_ir_version={self.max_ir_version}"
            raise ConfigError(describe("max_ir_version must be >= 1", seen=seen, fix="use None for any"))


def validate(
    model: Any,
    *,
    path: Path | None = None,
    limits: ModelLimits | None = None,
    op_support: OpSupport | None = None,
    size_bytes: int | None = None,
    found: Sequence[Problem] = (),
    run_checker: bool = True,
    serialized: bytes | None = None,
) -> None:
    """Check ``model`` (an ``onnx.ModelProto``) and raise one ``ModelError`` listing every problem.

    ``path`` names the model in the error and lets the checker read a model that cannot be checked
    in memory (external data not loaded, or over 2 GiB). ``size_bytes`` is the model file plus its
    external data, checked against ``limits.max_file_bytes``. ``op_support`` is the backend's view
    of which operators run (``None`` skips that check). ``found`` are problems the caller found
    already (the loader's external-data problems); they lead the list. ``run_checker=False`` skips
    ``onnx.checker``, for a model whose external data could not be resolved. ``serialized``: the
    model's bytes as read from its file, when they are the whole model; the checker reads them
    instead of serializing ``model`` again.
    """
    problems = [*found]
    problems += find_problems(
        model,
        path=path,
        limits=limits,
        op_support=op_support,
        size_bytes=size_bytes,
        run_checker=run_checker,
        serialized=serialized,
    )
    if problems:
        raise ModelError(problems, path=str(path) if path is not None else None)


def find_problems(
    model: Any,
    *,
    path: Path | None = None,
    limits: ModelLimits | None = None,
    op_support: OpSupport | None = None,
    size_bytes: int | None = None,
    run_checker: bool = True,
    serialized: bytes | None = None,
) -> list[Problem]:
    """Every problem :func:`validate` would raise, as a list (empty for a valid model)."""
    limits = limits or ModelLimits()
    problems: list[Problem] = []
    if size_bytes is not None and size_bytes > limits.max_file_bytes:
        problems.append(
            Problem(
                str(path) if path is not None else "model",
                f"is {size_bytes} bytes with its external data, over the limit of {limits.max_file_bytes}",
                "shrink the model or raise ModelLimits.max_file_bytes",
            )
        )
    problems += _opset_problems(model, limits)
    problems += _ir_problems(model, limits)
    problems += _io_problems(model.graph)
    problems += _dim_problems(model.graph, limits.max_dim_elements)
    if run_checker:
        problems += checker_problems(model, path, serialized)
    if op_support is not None:
        problems += _op_problems(model, op_support)
    return problems


def _opset_problems(model: Any, limits: ModelLimits) -> list[Problem]:
    version = opset_versions(model.opset_import).get(DEFAULT_DOMAIN)
    wanted = f"{limits.min_opset}..{limits.max_opset}"
    fix = (
        f"export with an opset in {wanted} (torch.onnx.export(..., opset_version={limits.max_opset})) "
        f"or convert it with onnx.version_converter.convert_version(model, {limits.max_opset})"
    )
    if version is None:
        if any(normalize_domain(ref.node.domain) == DEFAULT_DOMAIN for ref in nodes(model)):
            return [Problem("opset_import", "imports no default-domain (ai.onnx) opset", fix)]
        return []
    if limits.min_opset <= version <= limits.max_opset:
        return []
    return [Problem("opset_import", f"default-domain opset {version} is outside {wanted}", fix)]


def _ir_problems(model: Any, limits: ModelLimits) -> list[Problem]:
    newest = limits.max_ir_version
    if newest is None or model.ir_version <= newest:
        return []
    return [
        Problem(
            "ir_version",
            f"IR version {model.ir_version} is newer than the {newest} this backend's runtime reads",
            f"save the model with ir_version {newest} (set model.ir_version = {newest} before onnx.save; "
            "recent onnx versions write a newer IR by default), or upgrade the runtime",
        )
    ]


def _io_problems(graph: Any) -> list[Problem]:
    problems = []
    if not graph_inputs(graph):
        problems.append(
            Problem(
                f"graph {graph.name!r}",
                "has no inputs (every graph input is an initializer)",
                "kiln feeds a model through its inputs; give the graph at least one non-constant input",
            )
        )
    if not graph.output:
        problems.append(
            Problem(f"graph {graph.name!r}", "has no outputs", "declare the tensors to return as outputs")
        )
    return problems + list(signature(graph).problems)


def _declared_shapes(graph: Any) -> Iterator[tuple[str, list[int | str]]]:
    """``(where, dims)`` of every declared tensor shape; a symbolic dim is its name, an unknown one '?'."""
    for sub in graphs(graph):
        for kind, values in (("input", sub.input), ("output", sub.output), ("value_info", sub.value_info)):
            for value in values:
                tensor_type = value.type.tensor_type
                if value.type.WhichOneof("value") == "tensor_type" and tensor_type.HasField("shape"):
                    yield f"{kind} {value.name!r}", [_dim(d) for d in tensor_type.shape.dim]
        for tensor in sub.initializer:
            yield f"initializer {tensor.name!r}", list(tensor.dims)
        for sparse in sub.sparse_initializer:
            yield f"initializer {sparse.values.name!r}", list(sparse.dims)


def _dim(dim: Any) -> int | str:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    return str(dim.dim_param) if dim.HasField("dim_param") else "?"


def _dim_problems(graph: Any, max_elements: int) -> list[Problem]:
    fix = (
        "declare the real size, or a symbolic dim (e.g. 'batch') for one that varies; "
        "or raise ModelLimits.max_dim_elements"
    )
    problems = []
    for where, dims in _declared_shapes(graph):
        static = [d for d in dims if isinstance(d, int)]
        bad = [d for d in static if d < 0 or d > max_elements]
        if bad:
            what = f"declares dim {bad[0]} in shape {dims}, outside 0..{max_elements}"
            problems.append(Problem(where, what, fix))
        elif math.prod(static) > max_elements:
            what = f"has {math.prod(static)} elements in shape {dims}, over the limit of {max_elements}"
            problems.append(Problem(where, what + " (not counting symbolic dims)", fix))
    return problems


def _op_problems(model: Any, op_support: OpSupport) -> list[Problem]:
    local = {(normalize_domain(f.domain), f.name) for f in model.functions}
    verdicts: dict[tuple[str, str, int], str | None] = {}
    refused: dict[tuple[str, str, int], list[str]] = {}
    for ref in nodes(model):
        domain = normalize_domain(ref.node.domain)
        if (domain, ref.node.op_type) in local:
            continue  # a model-local function: its body's nodes are checked instead
        key = (domain, ref.node.op_type, ref.opsets.get(domain, 0))
        if key not in verdicts:
            verdicts[key] = op_support.unsupported(*key)
        if verdicts[key] is not None:
            refused.setdefault(key, []).append(ref.label)
    problems = []
    for (domain, op_type, opset), labels in refused.items():
        more = f" and {len(labels) - 1} more node(s) like it" if len(labels) > 1 else ""
        what = f"operator {domain or 'ai.onnx'}::{op_type} (opset {opset}) cannot run on this backend"
        problems.append(Problem(labels[0] + more, what, str(verdicts[(domain, op_type, opset)])))
    return problems
