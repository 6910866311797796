from __future__ import annotations

import onnxruntime

from kiln.compile.backends.onnxruntime_ops import OPEN_END, KernelDef, OrtOpSupport, cpu_op_support


def test_gemm_is_supported_at_current_opsets() -> None:
    support = cpu_op_support()
    assert support.unsupported("", "Gemm", 13) is None
    assert support.unsupported("", "Gemm", 18) is None
    assert support.unsupported("ai.onnx", "Gemm", 18) is None
    assert support.version == onnxruntime.__version__


def test_made_up_op_names_op_domain_opset_and_fix() -> None:
    reason = cpu_op_support().unsupported("", "FrobnicateTensor", 18)
    assert reason is not None
    assert "FrobnicateTensor" in reason
    assert "ai.onnx" in reason
    assert "opset 18" in reason
    assert "re-export" in reason


def test_unknown_domain_is_named() -> None:
    reason = cpu_op_support().unsupported("com.example.custom", "Gemm", 1)
    assert reason is not None
    assert "'com.example.custom'" in reason
    assert "no CPU kernels in that domain" in reason


def test_opset_outside_kernel_ranges_lists_the_covered_ones() -> None:
    # Gemm-6 is a real ONNX schema, but ONNX Runtime registers Gemm kernels only from 7 on.
    reason = cpu_op_support().unsupported("", "Gemm", 6)
    assert reason is not None
    assert "7-8" in reason
    assert "13+" in reason
    assert "version_converter" in reason


def test_contrib_ops_functions_and_folded_constants_are_supported() -> None:
    support = cpu_op_support()
    assert support.unsupported("com.microsoft", "FusedGemm", 1) is None
    assert support.unsupported("com.microsoft.nchwc", "Conv", 1) is None
    assert support.unsupported("", "Mish", 18) is None  # an ONNX function: inlined by ORT
    assert support.unsupported("", "Constant", 18) is None  # folded into an initializer on load


def test_support_from_an_explicit_kernel_list() -> None:
    support = OrtOpSupport(
        [KernelDef("", "Relu", 6, 12), KernelDef("", "Relu", 14, OPEN_END), KernelDef("x.y", "Thing", 1, 1)],
        version="9.9",
    )
    assert support.unsupported("", "Relu", 13) is not None  # Relu-13 schema, no kernel for it
    assert support.unsupported("", "Relu", 12) is None
    assert support.unsupported("", "Relu", 20) is None  # schema version 14 at opset 20
    assert support.unsupported("x.y", "Thing", 1) is None
    reason = support.unsupported("x.y", "Thing", 2)
    assert reason is not None
    assert "kernels cover opsets 1" in reason
    assert support.domains == frozenset({"", "x.y"})


def test_max_ir_version_is_what_onnxruntime_loads() -> None:
    import onnx

    from kiln.compile.backends.onnxruntime import OnnxRuntimeBackend
    from kiln.compile.backends.onnxruntime_ops import _load_error, max_ir_version

    newest = max_ir_version()
    assert 3 < newest <= onnx.IR_VERSION
    assert _load_error(newest) is None
    if newest < onnx.IR_VERSION:
        assert "IR version" in str(_load_error(newest + 1))
    assert OnnxRuntimeBackend().model_limits().max_ir_version == newest
