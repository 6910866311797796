"""The ONNX Runtime backend's Target (this CPU and this onnxruntime) and the load-time check."""

from __future__ import annotations

import functools

from kiln.compile.backends.base import Target
from kiln.compile.backends.cpu import CpuInfo, read_cpu_info
from kiln.errors import BuildError, describe

BACKEND_NAME = "onnxruntime"

BINDING_FIELDS: tuple[str, ...] = ("backend", "backend_version", "device_kind", "arch")
"""Target fields an engine is bound to: loading on a machine that differs in any is refused."""


def cpu_target(cpu: CpuInfo, *, version: str, build_info: str) -> Target:
    """The target for ``cpu`` running onnxruntime ``version`` (``build_info`` from the library).

    The core count is left out on purpose: the optimized graph does not depend on it (threads are
    chosen when the engine is loaded), so machines that differ only in cores share cache entries.
    """
    details = (
        ("cpu_flags", " ".join(cpu.kernel_flags)),
        ("machine", cpu.machine),
        ("ort_build", build_info.removeprefix("ORT Build Info:").strip()),
    )
    return Target(
        backend=BACKEND_NAME,
        backend_version=version,
        device_kind="cpu",
        device_name=cpu.model_name,
        arch=cpu.isa_level,
        details=details,
    )


@functools.cache
def machine_target() -> Target:
    """This machine's target (read once per process)."""
    import onnxruntime
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

    return cpu_target(
        read_cpu_info(), version=str(onnxruntime.__version__), build_info=str(ort_c.get_build_info())
    )


def check_target(built: Target, here: Target) -> None:
    """``BuildError`` when an engine built for ``built`` cannot run on ``here``.

    The optimized graph is specific to the ISA level (NCHWc block sizes, fused kernels) and to the
    onnxruntime version that wrote it (its contrib ops), so both must match.
    """
    mismatched = [f for f in BINDING_FIELDS if getattr(built, f) != getattr(here, f)]
    if not mismatched:
        return
    raise BuildError(
        describe(
            f"engine was built for {_show(built)} but this machine is {_show(here)} "
            f"(differs in {', '.join(mismatched)})",
            fix="rebuild the engine on this machine (the cache does this on a miss), "
            "or serve it on a machine like the one it was built on",
        )
    )


def _show(target: Target) -> str:
    where = f"{target.device_kind} {target.arch} ({target.device_name})"
    return f"{target.backend} {target.backend_version} on {where}"
