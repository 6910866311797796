"""The ONNX -> torch converter, op by op, against ONNX Runtime on tiny graphs built inline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch", reason="the torch backend needs torch (the `torch` extra)")

from kiln.compile.backends.torch.onnx_module import ConvertOptions, convert_onnx  # noqa: E402

F32, I64 = TensorProto.FLOAT, TensorProto.INT64
RNG = np.random.default_rng(0)


def x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return (RNG.random(shape).astype(np.float32) + 0.5).astype(np.float32)


@dataclass
class Case:
    """One graph: nodes reading inputs ``a``, ``b``... and initializers, producing ``y``."""

    nodes: list[Any]
    inputs: dict[str, np.ndarray]
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17
    out_type: int = F32


def node(op: str, inputs: list[str], **attrs: Any) -> Any:
    return helper.make_node(op, inputs, ["y"], name=f"{op.lower()}_0", **attrs)


def _type(array: np.ndarray) -> int:
    return {np.float32: F32, np.int64: I64, np.bool_: TensorProto.BOOL}[array.dtype.type]


def build(case: Case) -> Any:
    graph = helper.make_graph(
        case.nodes,
        "g",
        [helper.make_tensor_value_info(k, _type(v), list(v.shape)) for k, v in case.inputs.items()],
        [helper.make_tensor_value_info("y", case.out_type, None)],
        [numpy_helper.from_array(v, k) for k, v in case.inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)], ir_version=8)


def run_both(case: Case) -> tuple[np.ndarray, np.ndarray]:
    model = build(case)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, case.inputs
    )[0]
    module = convert_onnx(model)
    with torch.no_grad():
        got = module(*[torch.from_numpy(case.inputs[n]) for n in module.input_names])
    return got[0].numpy(), want


CASES: dict[str, Case] = {
    "add_broadcast": Case([node("Add", ["a", "b"])], {"a": x(2, 3), "b": x(3)}),
    "sub": Case([node("Sub", ["a", "b"])], {"a": x(2, 3), "b": x(2, 3)}),
    "mul_init": Case([node("Mul", ["a", "w"])], {"a": x(2, 3)}, {"w": x(3)}),
    "div": Case([node("Div", ["a", "b"])], {"a": x(4), "b": pos(4)}),
    "pow": Case([node("Pow", ["a", "b"])], {"a": pos(4), "b": x(4)}),
    "relu": Case([node("Relu", ["a"])], {"a": x(5)}),
    "sigmoid": Case([node("Sigmoid", ["a"])], {"a": x(5)}),
    "tanh": Case([node("Tanh", ["a"])], {"a": x(5)}),
    "erf": Case([node("Erf", ["a"])], {"a": x(5)}),
    "exp": Case([node("Exp", ["a"])], {"a": x(5)}),
    "log": Case([node("Log", ["a"])], {"a": pos(5)}),
    "sqrt": Case([node("Sqrt", ["a"])], {"a": pos(5)}),
    "neg_abs": Case([helper.make_node("Neg", ["a"], ["n"]), node("Abs", ["n"])], {"a": x(5)}),
    "reciprocal": Case([node("Reciprocal", ["a"])], {"a": pos(5)}),
    "floor_ceil": Case([helper.make_node("Floor", ["a"], ["f"]), node("Ceil", ["f"])], {"a": x(5) * 3}),
    "softplus": Case([node("Softplus", ["a"])], {"a": x(5)}),
    "hard_sigmoid": Case([node("HardSigmoid", ["a"], alpha=0.3, beta=0.4)], {"a": x(5)}),
    "leaky_relu": Case([node("LeakyRelu", ["a"], alpha=0.2)], {"a": x(5)}),
    "elu": Case([node("Elu", ["a"], alpha=0.7)], {"a": x(5)}),
    "gelu_tanh": Case([node("Gelu", ["a"], approximate="tanh")], {"a": x(5)}, opset=20),
    "hard_swish": Case([node("HardSwish", ["a"])], {"a": x(5) * 4}),
    "clip_inputs": Case(
        [node("Clip", ["a", "lo", "hi"])],
        {"a": x(6)},
        {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)},
    ),
    "where": Case(
        [helper.make_node("Greater", ["a", "b"], ["c"]), node("Where", ["c", "a", "b"])],
        {"a": x(2, 3), "b": x(2, 3)},
    ),
    "max_min_sum": Case(
        [
            helper.make_node("Max", ["a", "b"], ["m"]),
            helper.make_node("Min", ["m", "a"], ["n"]),
            node("Sum", ["n", "b", "a"]),
        ],
        {"a": x(3), "b": x(3)},
    ),
    "cast_equal": Case(
        [
            helper.make_node("Cast", ["a"], ["i"], to=I64),
            helper.make_node("Equal", ["i", "i"], ["e"]),
            node("Cast", ["e"], to=F32),
        ],
        {"a": x(4) * 4},
    ),
    "reshape_zero_and_infer": Case(
        [node("Reshape", ["a", "s"])], {"a": x(2, 3, 4)}, {"s": np.array([0, -1], np.int64)}
    ),
    "flatten": Case([node("Flatten", ["a"], axis=2)], {"a": x(2, 3, 4, 5)}),
    "transpose": Case([node("Transpose", ["a"], perm=[2, 0, 1])], {"a": x(2, 3, 4)}),
    "squeeze_unsqueeze": Case(
        [helper.make_node("Unsqueeze", ["a", "ax"], ["u"]), node("Squeeze", ["u", "ax"])],
        {"a": x(2, 3)},
        {"ax": np.array([1], np.int64)},
    ),
    "unsqueeze_opset11": Case([node("Unsqueeze", ["a"], axes=[0, 3])], {"a": x(2, 3)}, opset=11),
    "concat": Case([node("Concat", ["a", "b"], axis=1)], {"a": x(2, 3), "b": x(2, 2)}),
    "split_first": Case(
        [helper.make_node("Split", ["a", "sp"], ["y", "z"], axis=1)],
        {"a": x(2, 5)},
        {"sp": np.array([2, 3], np.int64)},
    ),
    "slice_steps": Case(
        [node("Slice", ["a", "st", "en", "ax", "sp"])],
        {"a": x(4, 6)},
        {
            "st": np.array([1, 0], np.int64),
            "en": np.array([4, 9223372036854775807], np.int64),
            "ax": np.array([0, 1], np.int64),
            "sp": np.array([1, 2], np.int64),
        },
    ),
    "gather_axis1_const": Case(
        [node("Gather", ["a", "i"], axis=1)], {"a": x(3, 5)}, {"i": np.array([4, -1, 0], np.int64)}
    ),
    "gather_tensor_ids": Case(
        [node("Gather", ["t", "ids"])], {"ids": np.array([[1, 0], [2, 2]], np.int64)}, {"t": x(3, 4)}
    ),
    "expand": Case([node("Expand", ["a", "s"])], {"a": x(3, 1)}, {"s": np.array([2, 3, 4], np.int64)}),
    "tile": Case([node("Tile", ["a", "r"])], {"a": x(2, 3)}, {"r": np.array([2, 1], np.int64)}),
    "constant_of_shape": Case(
        [
            helper.make_node("Shape", ["a"], ["s"]),
            helper.make_node(
                "ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.array([2.5], np.float32))
            ),
            node("Add", ["a", "c"]),
        ],
        {"a": x(2, 3)},
    ),
    "range_size": Case(
        [
            helper.make_node("Size", ["a"], ["n"]),
            helper.make_node("Range", ["zero", "n", "one"], ["r"]),
            node("Cast", ["r"], to=F32),
        ],
        {"a": x(2, 3)},
        {"zero": np.array(0, np.int64), "one": np.array(1, np.int64)},
    ),
    "conv_asymmetric_pads_group": Case(
        [node("Conv", ["a", "w", "b"], pads=[0, 1, 1, 0], strides=[2, 1], group=2)],
        {"a": x(2, 4, 7, 6)},
        {"w": x(6, 2, 3, 3), "b": x(6)},
    ),
    "conv_same_upper": Case(
        [node("Conv", ["a", "w"], auto_pad="SAME_UPPER", strides=[2, 2])],
        {"a": x(1, 3, 9, 8)},
        {"w": x(4, 3, 3, 3)},
    ),
    "conv1d": Case([node("Conv", ["a", "w"], pads=[1, 1])], {"a": x(2, 3, 10)}, {"w": x(5, 3, 3)}),
    "max_pool_ceil": Case(
        [node("MaxPool", ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)],
        {"a": x(1, 2, 8, 7)},
    ),
    "average_pool": Case(
        [node("AveragePool", ["a"], kernel_shape=[2, 2], strides=[2, 2])], {"a": x(1, 2, 6, 6)}
    ),
    "average_pool_pads_exclude": Case(
        [node("AveragePool", ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)],
        {"a": x(1, 2, 5, 5)},
    ),
    "global_pools": Case(
        [
            helper.make_node("GlobalAveragePool", ["a"], ["g"]),
            helper.make_node("GlobalMaxPool", ["a"], ["h"]),
            node("Add", ["g", "h"]),
        ],
        {"a": x(2, 3, 4, 5)},
    ),
    "batch_norm": Case(
        [node("BatchNormalization", ["a", "s", "b", "m", "v"], epsilon=1e-3)],
        {"a": x(2, 3, 4, 4)},
        {"s": x(3), "b": x(3), "m": x(3), "v": pos(3)},
    ),
    "layer_norm": Case(
        [node("LayerNormalization", ["a", "s", "b"], axis=-1, epsilon=1e-5)],
        {"a": x(2, 3, 8)},
        {"s": x(8), "b": x(8)},
    ),
    "instance_norm": Case(
        [node("InstanceNormalization", ["a", "s", "b"])], {"a": x(2, 3, 5, 5)}, {"s": x(3), "b": x(3)}
    ),
    "softmax_13": Case([node("Softmax", ["a"], axis=1)], {"a": x(2, 3, 4)}),
    "softmax_11_coerced": Case([node("Softmax", ["a"], axis=1)], {"a": x(2, 3, 4)}, opset=11),
    "log_softmax": Case([node("LogSoftmax", ["a"], axis=-1)], {"a": x(2, 5)}),
    "gemm_trans_alpha_beta": Case(
        [node("Gemm", ["a", "w", "c"], transA=1, transB=1, alpha=0.5, beta=2.0)],
        {"a": x(4, 3)},
        {"w": x(5, 4), "c": x(5)},
    ),
    "gemm_plain": Case([node("Gemm", ["a", "w", "c"])], {"a": x(3, 4)}, {"w": x(4, 5), "c": x(5)}),
    "matmul_batched": Case([node("MatMul", ["a", "b"])], {"a": x(2, 3, 4), "b": x(2, 4, 5)}),
    "einsum": Case([node("Einsum", ["a", "b"], equation="bij,bjk->bik")], {"a": x(2, 3, 4), "b": x(2, 4, 5)}),
    "reduce_mean_18": Case(
        [node("ReduceMean", ["a", "ax"], keepdims=0)],
        {"a": x(2, 3, 4)},
        {"ax": np.array([1], np.int64)},
        opset=18,
    ),
    "reduce_mean_13_attr": Case([node("ReduceMean", ["a"], axes=[0, 2])], {"a": x(2, 3, 4)}, opset=13),
    "reduce_sum_13": Case(
        [node("ReduceSum", ["a", "ax"])], {"a": x(2, 3)}, {"ax": np.array([-1], np.int64)}, opset=13
    ),
    "reduce_max_min_prod": Case(
        [
            helper.make_node("ReduceMax", ["a"], ["m"], axes=[1]),
            helper.make_node("ReduceMin", ["a"], ["n"], axes=[1]),
            helper.make_node("ReduceProd", ["a"], ["p"], axes=[1]),
            helper.make_node("Add", ["m", "n"], ["s"]),
            node("Add", ["s", "p"]),
        ],
        {"a": pos(2, 3)},
        opset=13,
    ),
    "argmax": Case(
        [helper.make_node("ArgMax", ["a"], ["i"], axis=1, keepdims=0), node("Cast", ["i"], to=F32)],
        {"a": x(3, 5)},
    ),
    "pad_constant": Case(
        [node("Pad", ["a", "p", "v"])],
        {"a": x(2, 3)},
        {"p": np.array([1, 0, 0, 2], np.int64), "v": np.array(1.5, np.float32)},
    ),
    "pad_reflect": Case(
        [node("Pad", ["a", "p"], mode="reflect")],
        {"a": x(1, 2, 4, 4)},
        {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)},
    ),
    "pad_edge": Case(
        [node("Pad", ["a", "p"], mode="edge")],
        {"a": x(1, 2, 4, 4)},
        {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)},
    ),
    "dropout_identity": Case(
        [helper.make_node("Dropout", ["a"], ["d"]), node("Identity", ["d"])], {"a": x(4)}
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_onnxruntime(name: str) -> None:
    got, want = run_both(CASES[name])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_shape_arithmetic_stays_symbolic_under_export() -> None:
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape with a dynamic batch exports as one graph."""
    nodes = [
        helper.make_node("Shape", ["a"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        node("Reshape", ["a", "target"]),
    ]
    inits = {
        "zero": np.array(0, np.int64),
        "ax0": np.array([0], np.int64),
        "minus1": np.array([-1], np.int64),
    }
    model = build(Case(nodes, {"a": x(3, 4, 5)}, inits))
    module = convert_onnx(model)
    batch = torch.export.Dim("batch", min=2, max=64)
    program = torch.export.export(module, (torch.randn(3, 4, 5),), dynamic_shapes={"args": ({0: batch},)})
    out = program.module()(torch.randn(7, 4, 5))
    assert tuple(out[0].shape) == (7, 20)


def test_out_of_range_gather_ids_are_flagged_and_clamped() -> None:
    case = CASES["gather_tensor_ids"]
    module = convert_onnx(build(case))
    with torch.no_grad():
        ok = module(torch.tensor([[1, 0], [2, -1]]))
        bad = module(torch.tensor([[1, 7], [0, 0]]))
    assert not bool(ok[-1])
    assert bool(bad[-1])
    assert torch.isfinite(bad[0]).all()


def test_low_precision_keeps_named_nodes_and_their_weights_in_fp32() -> None:
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["y"], name="add"),
    ]
    case = Case(nodes, {"a": x(2, 4)}, {"w": x(4, 3), "b": x(3)})
    options = ConvertOptions(float_dtype=torch.bfloat16, keep_fp32_nodes=("mm",))
    module = convert_onnx(build(case), options)
    dtypes = {module.weight_sources[name]: buffer.dtype for name, buffer in module.named_buffers()}
    assert dtypes == {"w": torch.float32, "b": torch.bfloat16}
    got = module(torch.from_numpy(case.inputs["a"]))[0]
    assert got.dtype == torch.float32
    want = case.inputs["a"] @ case.inits["w"] + case.inits["b"]
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-2, atol=2e-2)


def test_unknown_kept_node_name_is_refused_with_real_names() -> None:
    from kiln.errors import BuildError

    with pytest.raises(BuildError, match="relu_0"):
        convert_onnx(build(CASES["relu"]), ConvertOptions(keep_fp32_nodes=("nope",)))


def test_unsupported_ops_and_attributes_are_listed_together() -> None:
    from kiln.errors import BuildError

    nodes = [
        helper.make_node("TopK", ["a", "k"], ["v", "i"], name="topk"),
        helper.make_node("MaxPool", ["a4"], ["p", "idx"], kernel_shape=[2, 2], name="pool"),
        node("Relu", ["v"]),
    ]
    case = Case(nodes, {"a": x(2, 5), "a4": x(1, 1, 4, 4)}, {"k": np.array([2], np.int64)})
    with pytest.raises(BuildError) as caught:
        convert_onnx(build(case))
    text = str(caught.value)
    assert "2 node(s)" in text
    assert "topk (TopK)" in text
    assert "pool (MaxPool)" in text
    assert "Indices" in text
    assert "onnxruntime backend" in text
