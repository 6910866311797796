"""Choosing a backend by name from a closed set. Heavy imports happen only in the chosen branch."""

from __future__ import annotations

from typing import Literal, TypeAlias

from kiln.compile.backends.base import Backend
from kiln.errors import ConfigError, describe

BackendName: TypeAlias = Literal["onnxruntime", "torch", "tensorrt"]
BACKEND_NAMES: tuple[BackendName, ...] = ("onnxruntime", "torch", "tensorrt")


def create_backend(name: str) -> Backend:
    """The backend called ``name``. ``ConfigError`` for an unknown name."""
    if name == "onnxruntime":
        from kiln.compile.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    if name == "torch":
        from kiln.compile.backends.torch import TorchBackend

        return TorchBackend()
    if name == "tensorrt":
        from kiln.compile.backends.tensorrt import TensorRTBackend

        return TensorRTBackend()
    raise ConfigError(describe("unknown backend", seen=name, fix=f"use one of {', '.join(BACKEND_NAMES)}"))
