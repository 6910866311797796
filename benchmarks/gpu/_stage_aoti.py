"""AOTInductor: does a CUDA package load on this image, and if not, why?

Builds a tiny package, records what its wrapper .so links against and which C++ runtime symbols it
defines itself (a static libstdc++ copy whose symbols are partly bound to the process's
libstdc++.so would explain a crash in ``std::regex``'s locale code inside ``parse_device_str``),
then loads it with the container runner in fresh processes: plain, and after ``dlopen`` with
``RTLD_DEEPBIND`` (the wrapper then binds to its own copy first).

With ``no_static_libstdcxx`` the package is compiled through a compiler wrapper that drops
``-static-libstdc++``/``-static-libgcc`` from Inductor's link line (torch 2.11 links the wrapper
.so that way), so the .so uses the process's libstdc++ like libtorch does.

``aoti_abi`` (stage ``aoti-abi``) isolates the cause without AOTInductor: it compiles the regex of
``parse_device_str`` into small shared libraries with different link options and calls it in a
fresh python, with and without torch imported first.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
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


_DROP_STATIC = """#!/bin/bash
args=()
for a in "$@"; do
  a=${a//-static-libstdc++/}
  a=${a//-static-libgcc/}
  [ -n "${a// /}" ] && args+=("$a")
done
exec g++ "${args[@]}"
"""


def _builder_lines(ctx: Context) -> None:
    import torch._inductor.cpp_builder as builder

    lines = Path(builder.__file__).read_text().splitlines()
    hits = [n for n, line in enumerate(lines) if "static-libstdc" in line]
    context = ["\n".join(f"{i + 1}: {lines[i]}" for i in range(max(0, n - 12), n + 2)) for n in hits]
    ctx.record("aoti", step="inductor link flags", source=context)


def run(ctx: Context, no_static_libstdcxx: bool = False) -> None:
    if not torch.cuda.is_available():
        ctx.record("aoti", skipped="no CUDA device")
        return
    _builder_lines(ctx)
    if no_static_libstdcxx:
        wrapper_cxx = ctx.work / "gxx-dynamic-libstdcxx"
        wrapper_cxx.write_text(_DROP_STATIC)
        wrapper_cxx.chmod(0o755)
        import torch._inductor.config as inductor_config

        inductor_config.cpp.cxx = (None, str(wrapper_cxx))  # type: ignore[assignment]
        ctx.record("aoti", step="compiler", cxx=str(wrapper_cxx), drops="-static-libstdc++ -static-libgcc")
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


ABI_TEST = textwrap.dedent(
    """
    #include <regex>
    #include <string>
    extern "C" __attribute__((visibility("default"))) int parse(const char* text) {
      std::regex re("(cpu|cuda|xpu|mps)(:([0-9]+))?");
      std::smatch sm;
      std::string s(text);
      if (!std::regex_match(s, sm, re)) return -2;
      return sm[3].matched ? std::stoi(sm[3].str()) : -1;
    }
    """
)


def aoti_abi(ctx: Context) -> None:
    """Compile the regex parse into shared libraries with different link options and call it in a
    fresh python, with and without torch imported first."""
    from torch.utils.cpp_extension import TORCH_LIB_PATH

    src = ctx.work / "abi.cpp"
    src.write_text(ABI_TEST)
    libtorch = f"-L{TORCH_LIB_PATH} -Wl,-rpath,{TORCH_LIB_PATH} -ltorch -ltorch_cpu -lc10"
    variants = {
        "plain": "",
        "linked to libtorch (as AOTInductor links)": libtorch,
        "libtorch + -Wl,-Bsymbolic": libtorch + " -Wl,-Bsymbolic",
        "libtorch + -fvisibility=hidden": libtorch + " -fvisibility=hidden -fvisibility-inlines-hidden",
        "libtorch + -static-libstdc++": libtorch + " -static-libstdc++",
    }
    maps = (
        "import torch; print(sorted({l.split()[-1] for l in open('/proc/self/maps')"
        " if 'libstdc++' in l or 'libgcc_s' in l}))"
    )
    info = subprocess.run(
        [sys.executable, "-c", maps], capture_output=True, text=True, timeout=120, check=False
    )
    gxx = subprocess.run(
        ["g++", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[:1]
    import torch._inductor.cpp_builder as builder

    source = Path(builder.__file__).read_text().splitlines()
    static = [f"{n + 1}: {line.strip()}" for n, line in enumerate(source) if "static-libstd" in line]
    exported = subprocess.run(
        f"nm -D --defined-only {TORCH_LIB_PATH}/libtorch_cpu.so | grep -c -E 'regex|_Compiler|locale' ",
        shell=True, capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    ctx.record(
        "aoti-abi",
        model="aoti",
        step="environment",
        libstdcxx_mapped=info.stdout.strip() or info.stderr[-300:],
        gxx=gxx,
        libtorch_cpu_exported_regex_locale_symbols=exported,
        cpp_builder_static_libstdcxx_lines=static,
    )
    for index, (name, flags) in enumerate(variants.items()):
        lib = ctx.work / f"abi{index}.so"
        built = subprocess.run(
            f"g++ -std=c++17 -O2 -shared -fPIC -D_GLIBCXX_USE_CXX11_ABI=1 {src} -o {lib} {flags}",
            shell=True, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if built.returncode != 0:
            ctx.record("aoti-abi", model="aoti", variant=name, built=False, error=built.stderr[-400:])
            continue
        for first in ("", "import torch; "):
            code = f"{first}import ctypes; print(ctypes.CDLL('{lib}').parse(b'cuda:3'))"
            ran = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
            )
            ctx.record("aoti-abi", model="aoti", variant=name, torch_first=bool(first), rc=ran.returncode,
                       output=(ran.stdout + ran.stderr)[-200:])  # fmt: skip
