"""The torch backend: PyTorch Inductor engines with CUDA graphs per batch bucket, weight refits
into standby engines, and an ONNX -> torch converter. See ``docs/backends.md``.

Importing this package does not import torch; the backend imports it when used.
"""

from kiln.compile.backends.torch.backend import TorchBackend

__all__ = ["TorchBackend"]
