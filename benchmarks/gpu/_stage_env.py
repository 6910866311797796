"""The machine: GPU, driver, versions, and the kiln torch backend's target."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess

import torch
from _stages import Context

PACKAGES = ("torch", "triton", "transformers", "torchvision", "onnx", "onnxruntime", "numpy")


def run(ctx: Context) -> None:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = str(getattr(importlib.import_module(name), "__version__", "?"))
        except ImportError:
            versions[name] = "absent"
    fields = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "versions": versions,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        fields.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            gpu_memory_bytes=props.total_memory,
            multiprocessors=props.multi_processor_count,
        )
        fields["nvidia_smi"] = _smi()
    from kiln.compile.backends.torch import TorchBackend

    target = TorchBackend().target()
    fields["kiln_target"] = {"tag": target.tag, "device_name": target.device_name, **dict(target.details)}
    ctx.record("env", **fields)


def _smi() -> str:
    query = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,persistence_mode"
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    return done.stdout.strip() or done.stderr.strip()
