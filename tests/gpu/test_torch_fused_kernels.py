"""The torch backend's fused-kernel options on a real CUDA GPU: ``conv_fusion=cudnn`` (cuDNN's
convolution + bias (+ residual) + ReLU kernels) on kiln's residual ``cnn`` example, and
``attention=cudnn`` on a ``.pt2`` attention program. Skipped where torch sees no CUDA device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs torch (the `torch` extra)")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU: torch.cuda.is_available() is False", allow_module_level=True)

import onnxruntime as ort  # noqa: E402

from kiln.compile.artifact import write_manifest  # noqa: E402
from kiln.compile.backends.torch import TorchBackend  # noqa: E402
from kiln.compile.backends.torch.program import cudnn_attention  # noqa: E402
from kiln.compile.spec import BuildSpec  # noqa: E402
from kiln.examples import build_model, make_samples  # noqa: E402
from kiln.model.load import load_model  # noqa: E402


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_cudnn_fused_convolutions_match_onnxruntime(tmp_path: Path) -> None:
    backend = TorchBackend()
    path = build_model("cnn", tmp_path / "cnn.onnx", size="tiny")
    source = load_model(path, op_support=backend.op_support())
    options = (("buckets", "1,4"), ("compile", "eager"), ("conv_fusion", "cudnn"))
    spec = BuildSpec(precision="fp16", max_batch_size=4, backend="torch", backend_options=options)
    output = backend.build(source, spec, tmp_path / "engine")
    artifact = write_manifest(
        tmp_path / "engine", key="fused", source=source, spec=spec, target=backend.target(),
        output=output, build_seconds=0.0,
    )  # fmt: skip
    samples = make_samples("cnn", 3, size="tiny")
    feeds = {k: v for k, v in samples.items() if not k.startswith("_")}
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    engine = backend.load(artifact)
    instance = engine.create_instance()
    got = next(iter(instance.run(feeds).values()))
    assert got.shape == expected.shape
    assert rel(got, expected) < 1e-2
    instance.close()
    engine.close()


def test_cudnn_attention_matches_pytorch_with_a_padding_mask() -> None:
    q, k, v = (torch.randn(2, 4, 64, 32, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = torch.ones(2, 1, 64, 64, dtype=torch.bool, device="cuda")
    mask[..., 50:] = False
    expected = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), mask)
    got = cudnn_attention(q, k, v, mask)
    assert rel(got.float().cpu().numpy(), expected.cpu().numpy()) < 2e-2
