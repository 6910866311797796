"""AOTInductor: does a CUDA package load on this image, and if not, why?

Builds a tiny package, records what its wrapper .so links against and which C++ runtime symbols it
defines itself (a static libstdc++ copy whose symbols are partly bound to the process's
libstdc++.so would explain a crash in ``std::regex``'s locale code inside ``parse_device_str``),
then loads it with the container runner in fresh processes: plain, and after ``dlopen`` with
``RTLD_DEEPBIND`` (the wrapper then binds to its own copy first).
"""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import torch
from _stages import Context

_RUNNER = """
import ctypes, os, sys, torch
so, cubins, deep = sys.argv[1], sys.argv[2], sys.argv[3] == "deep"
if deep:
    ctypes.CDLL(so, mode=os.RTLD_NOW | os.RTLD_DEEPBIND)
runner = torch._C._aoti.AOTIModelContainerRunnerCuda(so, 1, "cuda", cubins)
out = runner.run([torch.randn(4, 64, device="cuda")])
print("AOTI_OK", float(out[0].float().sum()))
"""
_SYMBOLS = ("_ZNSt6locale7classicEv", "_ZNSt5ctypeIcE2idE", "_ZNSt7collateIcE2idE")


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(64, 64), torch.nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _run(command: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> tuple[object, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    return done.returncode, (done.stdout + done.stderr)[-1500:]


def run(ctx: Context) -> None:
    if not torch.cuda.is_available():
        ctx.record("aoti", skipped="no CUDA device")
        return
    model = _Mlp().cuda().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(4, 64, device="cuda"),), dynamic_shapes=({0: batch},))
    package = ctx.work / "mlp_aoti.pt2"
    started = time.perf_counter()
    torch._inductor.aoti_compile_and_package(program, package_path=str(package))
    ctx.record(
        "aoti", step="compile", seconds=round(time.perf_counter() - started, 1), bytes=package.stat().st_size
    )
    wrapper = _extract_so(package, ctx.work / "aoti_extract")
    _diagnose(ctx, wrapper)
    if wrapper is None:
        return
    env = ctx.fresh_env("aoti")
    for how in ("plain", "deep"):
        command = [sys.executable, "-c", _RUNNER, str(wrapper), str(wrapper.parent), how]
        rc, output = _run(command, env=env, timeout=60)
        label = "container runner" + (" after dlopen(RTLD_DEEPBIND)" if how == "deep" else "")
        ctx.record("aoti", step="load", how=label, rc=rc, ok="AOTI_OK" in output, output=output[-600:])


def _extract_so(package: Path, folder: Path) -> Path | None:
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
        names = [n for n in archive.namelist() if n.endswith(".so")]
    return folder / names[0] if names else None


def _diagnose(ctx: Context, wrapper: Path | None) -> None:
    if wrapper is None:
        ctx.record("aoti", step="wrapper", found=False)
        return
    _, ldd = _run(["ldd", str(wrapper)])
    _, defined = _run(["bash", "-c", f"nm -D --defined-only {wrapper}"])
    symbols = {name: f" {name}" in defined for name in _SYMBOLS}
    count = sum(1 for line in defined.splitlines() if " _ZNSt" in line or " _ZSt" in line)
    loaded = sorted(
        {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "libstdc++" in line}
    )
    ctx.record(
        "aoti",
        step="wrapper",
        links_libstdcxx="libstdc++" in ldd,
        ldd=ldd[-500:],
        defines_std_symbols=count,
        defines=symbols,
        process_libstdcxx=loaded,
    )
