"""The torch backend's Target: which GPU (or CPU), driver, CUDA and torch build an engine is for.

Compiled kernels (Triton cubins, cuDNN/cuBLAS choices, the compile cache) are specific to the GPU
architecture and the software that made them, so an engine is bound to: the torch version, the
device kind, the GPU's name and compute capability, the NVIDIA driver and the CUDA runtime. On a
CPU-only torch the target is the CPU's ISA level instead. ``check_target`` refuses anything else.
"""

from __future__ import annotations

import functools
import importlib
import platform
import re
from pathlib import Path

from kiln.compile.backends.base import Target
from kiln.errors import BuildError, describe

BACKEND_NAME = "torch"

BINDING_FIELDS: tuple[str, ...] = ("backend", "backend_version", "device_kind", "device_name", "arch")
BINDING_DETAILS: tuple[str, ...] = ("driver", "cuda")
"""Target fields and ``details`` keys an engine is bound to: any difference refuses the load."""

_DRIVER_FILE = Path("/proc/driver/nvidia/version")


def cuda_target(
    *,
    torch_version: str,
    device_name: str,
    capability: tuple[int, int],
    driver: str,
    cuda: str,
    details: dict[str, str],
) -> Target:
    """The target of a CUDA device (pure; ``machine_target`` reads the values)."""
    extra = {"driver": driver, "cuda": cuda, **details}
    return Target(
        backend=BACKEND_NAME,
        backend_version=torch_version,
        device_kind="cuda",
        device_name=device_name,
        arch=f"sm{capability[0]}{capability[1]}",
        details=tuple(sorted(extra.items())),
    )


@functools.cache
def machine_target(device: str) -> Target:
    """This machine's target for ``device`` (``cuda:N`` or ``cpu``), read once per process."""
    import torch

    if device == "cpu":
        return _cpu_target(str(torch.__version__))
    index = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(index)
    details = {
        "cudnn": str(torch.backends.cudnn.version()),  # type: ignore[no-untyped-call]
        "python": platform.python_version(),
        "triton": _triton_version(),
        "memory_bytes": str(props.total_memory),
        "multiprocessors": str(props.multi_processor_count),
    }
    return cuda_target(
        torch_version=str(torch.__version__),
        device_name=str(props.name),
        capability=(int(props.major), int(props.minor)),
        driver=driver_version(),
        cuda=str(torch.version.cuda),
        details=details,
    )


def _cpu_target(torch_version: str) -> Target:
    from kiln.compile.backends.cpu import read_cpu_info

    cpu = read_cpu_info()
    return Target(
        backend=BACKEND_NAME,
        backend_version=torch_version,
        device_kind="cpu",
        device_name=cpu.model_name,
        arch=cpu.isa_level,
        details=(("machine", cpu.machine), ("python", platform.python_version())),
    )


def _triton_version() -> str:
    try:
        triton = importlib.import_module("triton")
    except ImportError:
        return "absent"
    return str(getattr(triton, "__version__", "unknown"))


def driver_version() -> str:
    """The NVIDIA driver version (e.g. ``580.159.04``), from NVML, ``/proc``, or ``unknown``."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return str(pynvml.nvmlSystemGetDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    try:
        text = _DRIVER_FILE.read_text()
    except OSError:
        return "unknown"
    match = re.search(r"Kernel Module\s+(\S+)", text) or re.search(r"\s(\d+\.\d+(?:\.\d+)?)\s", text)
    return match.group(1) if match else "unknown"


def check_target(built: Target, here: Target) -> None:
    """``BuildError`` when an engine built for ``built`` may not run on ``here`` (see the module)."""
    mismatched = [f for f in BINDING_FIELDS if getattr(built, f) != getattr(here, f)]
    built_details, here_details = dict(built.details), dict(here.details)
    if built.device_kind == "cuda":
        mismatched += [k for k in BINDING_DETAILS if built_details.get(k) != here_details.get(k)]
    if not mismatched:
        return
    raise BuildError(
        describe(
            f"engine was built for {_show(built)} but this machine is {_show(here)} "
            f"(differs in {', '.join(mismatched)})",
            fix="rebuild the engine here (the engine cache does this on a miss), or serve it on the "
            "kind of machine it was built on",
        )
    )


def _show(target: Target) -> str:
    details = dict(target.details)
    extra = (
        f", driver {details.get('driver')}, CUDA {details.get('cuda')}"
        if target.device_kind == "cuda"
        else ""
    )
    return (
        f"torch {target.backend_version} on {target.device_kind} {target.arch} ({target.device_name}{extra})"
    )
