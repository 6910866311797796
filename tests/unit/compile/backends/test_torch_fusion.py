"""The torch backend's fused-kernel rewrites: ONNX Conv->Relu / Conv->Add->Relu folding
(``conv_fusion=cudnn``) and cuDNN attention for ``.pt2`` programs (``attention=cudnn``). On a
machine without CUDA the fused steps take their unfused path, so the function must not change."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch", reason="the torch backend needs torch (the `torch` extra)")

from kiln.compile.backends.torch.onnx_module import ConvertOptions, convert_onnx  # noqa: E402
from kiln.compile.backends.torch.options import parse_options  # noqa: E402
from kiln.compile.backends.torch.program import cudnn_attention, use_cudnn_attention  # noqa: E402
from kiln.errors import BuildError  # noqa: E402

RNG = np.random.default_rng(3)


def residual_block(*, extra_user: bool = False) -> object:
    """x -> Conv+bias -> Relu (r) -> Conv (no bias) -> Add(r) -> Relu -> y; ``extra_user`` also
    returns the second convolution's output, which must then stay unfused."""
    w1 = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32)
    b1 = RNG.standard_normal(4).astype(np.float32)
    w2 = RNG.standard_normal((4, 4, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"], name="relu1"),
        helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["c2", "r"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu2"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_user:
        outputs.append(helper.make_tensor_value_info("c2", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 6, 6])],
        outputs,
        [numpy_helper.from_array(v, k) for k, v in {"w1": w1, "b1": b1, "w2": w2}.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def op_types(module: torch.nn.Module) -> list[str]:
    return [step.op_type for step in module._steps]


def test_conv_relu_chains_fold_and_compute_the_same_function() -> None:
    model = residual_block()
    plain = convert_onnx(model, ConvertOptions())
    fused = convert_onnx(model, ConvertOptions(conv_fusion=True))
    assert op_types(plain) == ["Conv", "Relu", "Conv", "Add", "Relu"]
    assert op_types(fused) == ["Conv+Relu", "Conv+Add+Relu"]
    x = torch.from_numpy(RNG.standard_normal((2, 4, 6, 6)).astype(np.float32))
    torch.testing.assert_close(fused(x)[0], plain(x)[0])


def test_a_value_with_another_user_is_not_fused_away() -> None:
    fused = convert_onnx(residual_block(extra_user=True), ConvertOptions(conv_fusion=True))
    assert op_types(fused) == ["Conv+Relu", "Conv", "Add", "Relu"]


def test_conv_fusion_needs_eager_compile() -> None:
    with pytest.raises(BuildError, match="compile=eager"):
        parse_options({"conv_fusion": "cudnn"}, 8)
    options = parse_options({"conv_fusion": "cudnn", "compile": "eager", "tuning": "coordinate-descent"}, 8)
    assert options.conv_fusion
    assert options.coordinate_descent
    assert options.to_json()["attention"] == "auto"


class Attention(torch.nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def test_program_attention_calls_are_redirected_and_keep_their_result() -> None:
    q, k, v = (torch.randn(2, 2, 5, 4) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[..., -1] = False
    module = torch.export.export(Attention(), (q, k, v, mask)).module()
    expected = module(q, k, v, mask)
    assert use_cudnn_attention(module) == 1
    assert any(node.target is cudnn_attention for node in module.graph.nodes)
    torch.testing.assert_close(module(q, k, v, mask), expected)
