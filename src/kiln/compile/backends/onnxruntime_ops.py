"""Which operators ONNX Runtime's CPU provider runs, answered from its own kernel registry.

An op is supported when the CPU provider registers a kernel whose version range covers the op's
schema version at the model's opset, when ONNX defines it as a function (ONNX Runtime inlines the
body into supported ops), or when ONNX Runtime folds it while loading the graph (``Constant``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kiln.errors import describe

CPU_PROVIDER = "CPUExecutionProvider"
ONNX_DOMAIN = ""
_ONNX_ALIASES = frozenset({"", "ai.onnx"})
OPEN_END = 2**31 - 1
"""ONNX Runtime's ``version_range`` end for a kernel that covers every later opset."""

_FOLDED_ON_LOAD = frozenset({(ONNX_DOMAIN, "Constant")})


@dataclass(frozen=True, slots=True)
class KernelDef:
    """One registered kernel: op, domain and the op schema versions it covers (inclusive)."""

    domain: str
    op_type: str
    since: int
    until: int


class OrtOpSupport:
    """``OpSupport`` for ONNX Runtime's CPU provider, from a list of registered kernels."""

    def __init__(self, kernels: Iterable[KernelDef], *, version: str) -> None:
        ranges: dict[tuple[str, str], set[tuple[int, int]]] = {}
        for kernel in kernels:
            key = (_domain(kernel.domain), kernel.op_type)
            ranges.setdefault(key, set()).add((kernel.since, kernel.until))
        self._ranges: Mapping[tuple[str, str], tuple[tuple[int, int], ...]] = {
            key: tuple(sorted(spans)) for key, spans in ranges.items()
        }
        self._domains = frozenset(domain for domain, _ in self._ranges)
        self.version = version

    @property
    def domains(self) -> frozenset[str]:
        return self._domains

    def unsupported(self, domain: str, op_type: str, opset: int) -> str | None:
        """``None`` when the CPU provider runs ``op_type`` of ``domain`` at ``opset``, else why not."""
        domain = _domain(domain)
        if (domain, op_type) in _FOLDED_ON_LOAD:
            return None
        spans = self._ranges.get((domain, op_type))
        schema_version = _schema_version(domain, op_type, opset)
        if spans and any(lo <= (schema_version or opset) <= hi for lo, hi in spans):
            return None
        if _is_onnx_function(domain, op_type, opset):
            return None
        where = f"op {op_type!r} (domain {_show(domain)}, opset {opset})"
        if spans:
            return describe(
                f"ONNX Runtime {self.version} has no CPU kernel for {where}",
                seen=f"kernels cover opsets {_show_spans(spans)}",
                fix="convert the model to a covered opset (onnx.version_converter) or re-export it",
            )
        if domain not in self._domains:
            return describe(
                f"ONNX Runtime {self.version} does not know {where}: no CPU kernels in that domain",
                fix="re-export the model with standard ONNX ops, or use a backend that has this custom op",
            )
        return describe(
            f"ONNX Runtime {self.version} has no CPU kernel for {where}",
            fix="re-export the model replacing it with standard ONNX ops",
        )


@functools.cache
def cpu_op_support() -> OrtOpSupport:
    """The CPU provider's kernels of the installed ONNX Runtime (read once per process)."""
    import onnxruntime
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

    kernels = [
        KernelDef(k.domain, k.op_name, int(k.version_range[0]), int(k.version_range[1]))
        for k in ort_c.get_all_opkernel_def()
        if k.provider == CPU_PROVIDER
    ]
    return OrtOpSupport(kernels, version=str(onnxruntime.__version__))


@functools.cache
def max_ir_version() -> int:
    """The newest ONNX IR version the installed ONNX Runtime loads (read once per process).

    A one-node model at the newest IR version ``onnx`` knows is loaded; ONNX Runtime either takes
    it or names its maximum ("max supported IR version: 13"). Without that text, lower versions
    are tried one by one.
    """
    import onnx

    error = _load_error(int(onnx.IR_VERSION))
    if error is None:
        return int(onnx.IR_VERSION)
    named = _MAX_IR.search(error)
    if named:
        return int(named.group(1))
    return next((v for v in range(int(onnx.IR_VERSION) - 1, 3, -1) if _load_error(v) is None), 3)


_MAX_IR = re.compile(r"max supported IR version: (\d+)")


def _load_error(ir_version: int) -> str | None:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir_version
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=[CPU_PROVIDER])
    except Exception as exc:  # onnxruntime raises its own error classes
        return str(exc)
    return None


def _domain(domain: str) -> str:
    return ONNX_DOMAIN if domain in _ONNX_ALIASES else domain


def _show(domain: str) -> str:
    return repr(domain) if domain else "ai.onnx"


def _show_spans(spans: Iterable[tuple[int, int]]) -> str:
    return ", ".join(f"{lo}+" if hi >= OPEN_END else f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in spans)


def _schema_version(domain: str, op_type: str, opset: int) -> int | None:
    """The ``since_version`` of the op's schema in effect at ``opset``, as ONNX defines it."""
    import onnx.defs

    try:
        return int(onnx.defs.get_schema(op_type, opset, domain).since_version)
    except onnx.defs.SchemaError:
        return None


def _is_onnx_function(domain: str, op_type: str, opset: int) -> bool:
    import onnx.defs

    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return False
    return bool(
        getattr(schema, "has_function", False) or getattr(schema, "has_context_dependent_function", False)
    )
