"""What CPU this is, as far as an inference engine cares: model name, ISA level, kernel-relevant flags.

ONNX Runtime picks its CPU kernels (MLAS) by ISA at run time, and at ``ORT_ENABLE_ALL`` the saved
optimized graph bakes in a layout chosen for this ISA (NCHWc blocks of 8 floats on AVX2, 16 on
AVX-512). An engine built here is therefore bound to the ISA level, which is what ``isa_level``
returns. Parsing is pure (``parse_cpuinfo`` takes the text of ``/proc/cpuinfo``); only
``read_cpu_info`` touches the machine.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CPUINFO_PATH = Path("/proc/cpuinfo")

X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})

KERNEL_FLAGS: tuple[str, ...] = (
    # x86: what MLAS dispatches on (GEMM, int8 GEMM, NCHWc convolutions, fp16/bf16 paths).
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    # Arm: NEON, dot product and int8 matrix multiply, half/bfloat16, SVE.
    "asimd",
    "asimdhp",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
)
"""CPU flags that change which ONNX Runtime kernels run; the rest of ``/proc/cpuinfo`` is noise."""

_AVX512_CORE = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl"})


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """This machine's CPU: model name, architecture (``platform.machine()``), flags, logical CPUs."""

    model_name: str
    machine: str
    flags: frozenset[str]
    num_logical: int

    @property
    def isa_level(self) -> str:
        return isa_level(self.flags, self.machine)

    @property
    def kernel_flags(self) -> tuple[str, ...]:
        """The flags from ``KERNEL_FLAGS`` this CPU has, in that order."""
        return tuple(f for f in KERNEL_FLAGS if f in self.flags)


def isa_level(flags: Iterable[str], machine: str) -> str:
    """The best ISA level ONNX Runtime's kernels can use on this CPU.

    x86, best first: ``amx`` (AMX int8/bf16 tiles), ``avx512_vnni``, ``avx512`` (F+BW+DQ+VL),
    ``avx2_vnni`` (AVX-VNNI without AVX-512), ``avx2`` (with FMA), ``avx``, ``sse4``, ``sse2``.
    Other architectures: the machine name (``aarch64``...); their flags go in the target's details.
    """
    have = frozenset(flags)
    arch = _normalise_machine(machine)
    if arch not in X86_MACHINES:
        return arch
    avx512 = have >= _AVX512_CORE
    avx2 = have >= {"avx2", "fma"}
    levels = (
        ("amx", avx512 and bool({"amx_int8", "amx_bf16"} & have)),
        ("avx512_vnni", avx512 and "avx512_vnni" in have),
        ("avx512", avx512),
        ("avx2_vnni", avx2 and "avx_vnni" in have),
        ("avx2", avx2),
        ("avx", "avx" in have),
        ("sse4", {"sse4_1", "sse4_2"} <= have),
    )
    return next((name for name, ok in levels if ok), "sse2")


def parse_cpuinfo(text: str, machine: str) -> CpuInfo:
    """Parse the text of ``/proc/cpuinfo`` (x86 ``flags`` or Arm ``Features`` lines).

    The model name comes from ``model name``, else ``Hardware``, else the Arm implementer/part
    codes, else ``machine``. Flags are those of the first processor listed.
    """
    fields: dict[str, str] = {}
    num_logical = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "processor":
            num_logical += 1
        fields.setdefault(key, value.strip())
    flags = frozenset((fields.get("flags") or fields.get("features") or "").split())
    return CpuInfo(
        model_name=_model_name(fields, machine),
        machine=_normalise_machine(machine),
        flags=flags,
        num_logical=max(num_logical, 1),
    )


def read_cpu_info() -> CpuInfo:
    """This machine's CPU, from ``/proc/cpuinfo`` where there is one, else from ``platform``."""
    machine = platform.machine() or "unknown"
    try:
        text = CPUINFO_PATH.read_text(errors="replace")
    except OSError:
        text = ""
    info = parse_cpuinfo(text, machine)
    if not text:
        name = platform.processor() or machine
        return CpuInfo(name, info.machine, info.flags, os.cpu_count() or 1)
    return info


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), which is what a thread pool should use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _normalise_machine(machine: str) -> str:
    name = machine.strip().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name or "unknown")


def _model_name(fields: dict[str, str], machine: str) -> str:
    for key in ("model name", "hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    if "cpu implementer" in fields and "cpu part" in fields:
        return (
            f"{_normalise_machine(machine)} implementer {fields['cpu implementer']} part {fields['cpu part']}"
        )
    return _normalise_machine(machine)
