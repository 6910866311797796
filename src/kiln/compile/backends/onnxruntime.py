"""The ONNX Runtime backend (CPU; the embedded default). (Implementation pending.)"""

from __future__ import annotations


class OnnxRuntimeBackend:
    name = "onnxruntime"
