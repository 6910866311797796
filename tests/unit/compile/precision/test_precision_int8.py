"""INT8 QDQ quantization from kiln's own calibration, against the fp32 ONNX Runtime oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from tiny_models import build_conv, build_ctr, build_mlp, build_tanh, rel_l2, run_model

from kiln.compile.accuracy import measure_accuracy
from kiln.compile.data import SampleSet
from kiln.compile.precision import apply_precision, load_calibration_table, save_calibration_table
from kiln.compile.spec import BuildSpec, CalibrationSpec
from kiln.errors import ConfigError


def int8(method: str = "minmax", **changes: object) -> BuildSpec:
    calibration = CalibrationSpec(method=method, num_samples=128, percentile=99.0)  # type: ignore[arg-type]
    return BuildSpec(precision="int8", calibration=calibration).with_changes(**changes)


def mlp_samples(n: int = 128, seed: int = 0, heavy_tail: bool = False) -> SampleSet:
    rng = np.random.default_rng(seed)
    x = rng.standard_t(2, size=(n, 16)) if heavy_tail else rng.normal(size=(n, 16))
    return SampleSet({"x": x.astype(np.float32)})


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def initializer_types(model: onnx.ModelProto) -> dict[str, int]:
    return {t.name: t.data_type for t in model.graph.initializer}


def test_int8_inserts_qdq_u8s8_and_stays_close_to_fp32() -> None:
    model = build_mlp()
    before = model.SerializeToString()
    progress: list[tuple[str, int, int]] = []
    result = apply_precision(model, int8(), calibration=mlp_samples(), progress=lambda *a: progress.append(a))
    assert model.SerializeToString() == before
    assert result.path == "calibrated"
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(ops(result.model))
    types = initializer_types(result.model)
    assert types["x_zero_point"] == TensorProto.UINT8  # activations uint8
    assert TensorProto.INT8 in types.values()  # weights int8
    assert result.calibration_table is not None
    assert "x" in result.calibration_table
    assert progress == [("calibrating", i, 4) for i in (1, 2, 3, 4)]  # 128 samples, batches of 32
    x = mlp_samples(256, seed=1).inputs["x"]
    assert rel_l2(run_model(model, {"x": x}), run_model(result.model, {"x": x})) < 0.05


def test_int8_classifier_agrees_with_fp32_on_most_samples() -> None:
    model = build_conv()
    rng = np.random.default_rng(0)
    calibration = SampleSet({"img": rng.normal(size=(64, 3, 8, 8)).astype(np.float32)})
    result = apply_precision(model, int8(per_channel=True), calibration=calibration)
    img = rng.normal(size=(200, 3, 8, 8)).astype(np.float32)
    report = measure_accuracy(
        run_model(model, {"img": img}), run_model(result.model, {"img": img}), task="classifier"
    )
    assert report.rel_l2_error < 0.05
    assert report.top1_agreement is not None
    assert report.top1_agreement >= 0.9


def test_entropy_calibration_is_not_minmax_in_disguise() -> None:
    model, samples = build_mlp(), mlp_samples(heavy_tail=True)
    minmax = apply_precision(model, int8("minmax"), calibration=samples)
    entropy = apply_precision(model, int8("entropy"), calibration=samples)
    assert minmax.calibration_table is not None
    assert entropy.calibration_table is not None
    x_minmax, x_entropy = minmax.calibration_table["x"], entropy.calibration_table["x"]
    assert x_minmax[0] < x_entropy[0] <= x_entropy[1] < x_minmax[1]  # strictly narrower on the tail
    assert entropy.model.SerializeToString() != minmax.model.SerializeToString()


def test_percentile_clips_the_tail_too() -> None:
    model, samples = build_mlp(), mlp_samples(heavy_tail=True)
    minmax = apply_precision(model, int8("minmax"), calibration=samples)
    percentile = apply_precision(model, int8("percentile"), calibration=samples)
    assert minmax.calibration_table is not None
    assert percentile.calibration_table is not None
    assert percentile.calibration_table["x"][1] < minmax.calibration_table["x"][1]


def test_reusing_the_table_rebuilds_the_identical_model(tmp_path: Path) -> None:
    model, samples = build_mlp(), mlp_samples()
    calibrated = apply_precision(model, int8("entropy"), calibration=samples)
    assert calibrated.calibration_table is not None
    save_calibration_table(calibrated.calibration_table, tmp_path / "table.json", method="entropy")
    table = load_calibration_table(tmp_path / "table.json")
    reused = apply_precision(model, int8("entropy"), calibration_table=table)
    assert reused.path == "calibration-reuse"
    assert reused.model.SerializeToString() == calibrated.model.SerializeToString()
    assert dict(reused.calibration_table or {}) == dict(calibrated.calibration_table)


def test_reused_table_quantizes_new_weights_of_the_same_structure() -> None:
    samples = mlp_samples()
    first = apply_precision(build_mlp(seed=0), int8(), calibration=samples)
    assert first.calibration_table is not None
    retrained = build_mlp(seed=1)
    reused = apply_precision(retrained, int8(), calibration_table=first.calibration_table)
    assert reused.path == "calibration-reuse"
    assert reused.model.SerializeToString() != first.model.SerializeToString()
    x = samples.inputs["x"]
    # ranges from the old weights are a little off for the new ones, so the bound is looser
    assert rel_l2(run_model(retrained, {"x": x}), run_model(reused.model, {"x": x})) < 0.15


def test_table_of_another_structure_is_refused() -> None:
    other = apply_precision(
        build_conv(), int8(), calibration=SampleSet({"img": np.ones((4, 3, 8, 8), np.float32)})
    )
    assert other.calibration_table is not None
    with pytest.raises(ConfigError, match="does not fit this model"):
        apply_precision(build_mlp(), int8(), calibration_table=other.calibration_table)


def test_int8_without_calibration_data_says_what_to_pass() -> None:
    with pytest.raises(ConfigError, match="--calibration DIR"):
        apply_precision(build_mlp(), int8())


def test_calibration_data_that_does_not_fit_is_a_config_error() -> None:
    wrong = SampleSet({"x": np.ones((8, 3), np.float64)})
    with pytest.raises(ConfigError, match="'x'") as info:
        apply_precision(build_mlp(), int8(), calibration=wrong)
    assert "FP64" in str(info.value)
    assert "[8, 3]" in str(info.value)


def test_unknown_keep_fp32_node_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'nope'") as info:
        apply_precision(build_mlp(), int8(keep_fp32_nodes=("nope",)), calibration=mlp_samples())
    assert "mm0" in str(info.value)


def test_kept_node_stays_float_even_when_pre_processing_fuses_it() -> None:
    model = build_mlp()
    # add1 is fused with mm1 into one Gemm by pre-processing; that Gemm must stay float
    result = apply_precision(model, int8(keep_fp32_nodes=("add1",)), calibration=mlp_samples())
    gemm1 = next(n for n in result.model.graph.node if n.name.startswith("mm1"))
    gemm0 = next(n for n in result.model.graph.node if n.name.startswith("mm0"))
    types = initializer_types(result.model)
    assert types.get(gemm1.input[1]) == TensorProto.FLOAT  # weight read directly as float
    assert gemm0.input[1] not in types  # weight of the quantized layer comes from a DequantizeLinear


def test_keep_fp32_op_type_excludes_every_node_of_that_type() -> None:
    model = build_ctr()
    rng = np.random.default_rng(0)
    samples = SampleSet(
        {
            "ids": rng.integers(0, 50, size=(64, 2)).astype(np.int64),
            "dense": rng.normal(size=(64, 3)).astype(np.float32),
        }
    )
    quantized = apply_precision(model, int8(), calibration=samples)
    kept = apply_precision(model, int8(keep_fp32_op_types=("Gather",)), calibration=samples)
    assert "emb" not in initializer_types(quantized.model)  # the embedding table was quantized
    assert initializer_types(kept.model)["emb"] == TensorProto.FLOAT
    assert "QuantizeLinear" in ops(kept.model)  # the rest is still int8


def test_per_channel_and_int8_activations() -> None:
    result = apply_precision(
        build_mlp(), int8(per_channel=True, activation_type="int8"), calibration=mlp_samples()
    )
    inits = {t.name: t for t in result.model.graph.initializer}
    assert inits["x_zero_point"].data_type == TensorProto.INT8
    weight_scales = [t for name, t in inits.items() if name.startswith("W0") and name.endswith("_scale")]
    assert weight_scales
    assert list(weight_scales[0].dims) == [16]  # one scale per output channel


def test_model_with_a_fixed_batch_calibrates_one_batch_at_a_time() -> None:
    calls: list[tuple[str, int, int]] = []
    result = apply_precision(
        build_mlp(batch=1), int8(), calibration=mlp_samples(10), progress=lambda *a: calls.append(a)
    )
    assert result.path == "calibrated"
    assert calls[-1] == ("calibrating", 10, 10)


def test_stratified_calibration_needs_keys() -> None:
    spec = int8().with_changes(calibration=CalibrationSpec(stratify_by="_key", num_samples=16))
    with pytest.raises(ConfigError, match="stratif"):
        apply_precision(build_mlp(), spec, calibration=mlp_samples(64))
    keyed = SampleSet(mlp_samples(64).inputs, keys=np.arange(64) % 4)
    assert apply_precision(build_mlp(), spec, calibration=keyed).path == "calibrated"


def test_temporary_files_are_removed_from_the_workdir(tmp_path: Path) -> None:
    apply_precision(build_mlp(), int8(), calibration=mlp_samples(32), workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_pre_processing_falls_back_to_plain_shape_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime.quantization

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("symbolic shape inference failed")

    monkeypatch.setattr(onnxruntime.quantization, "quant_pre_process", broken)
    model = build_mlp()
    result = apply_precision(model, int8(), calibration=mlp_samples())
    assert "MatMul" in ops(result.model)  # not fused into Gemm: pre-processing did not run
    assert "QuantizeLinear" in ops(result.model)
    x = mlp_samples(64, seed=2).inputs["x"]
    assert rel_l2(run_model(model, {"x": x}), run_model(result.model, {"x": x})) < 0.05


def test_model_with_nothing_to_quantize_comes_back_as_it_was(tmp_path: Path) -> None:
    model = build_tanh()
    result = apply_precision(model, int8(), calibration=SampleSet({"x": np.ones((4, 4), np.float32)}))
    assert result.calibration_table == {}
    assert ops(result.model) == ["Tanh"]
    save_calibration_table({}, tmp_path / "t.json", method="minmax")
    again = apply_precision(model, int8(), calibration_table=load_calibration_table(tmp_path / "t.json"))
    # the same graph; pre-processing (skipped here: nothing it could change) adds only opset imports
    assert again.model.graph.node == result.model.graph.node
    assert again.model.graph.initializer == result.model.graph.initializer


def requantized_outputs(model: onnx.ModelProto, op_types: set[str]) -> int:
    """How many QuantizeLinear nodes read the output of a node of ``op_types``."""
    producer = {out: n.op_type for n in model.graph.node for out in n.output}
    return sum(
        1 for n in model.graph.node if n.op_type == "QuantizeLinear" and producer.get(n.input[0]) in op_types
    )


def test_float_outputs_skip_requantizing_products() -> None:
    products = {"MatMul", "Gemm"}
    plain = apply_precision(build_mlp(), int8(), calibration=mlp_samples()).model
    floats = apply_precision(
        build_mlp(), int8(float_output_op_types=("MatMul", "Gemm")), calibration=mlp_samples()
    ).model

    assert requantized_outputs(plain, products) > 0
    assert requantized_outputs(floats, products) == 0
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(ops(floats))  # the inputs are still int8
    x = mlp_samples(256, seed=1).inputs["x"]
    assert rel_l2(run_model(build_mlp(), {"x": x}), run_model(floats, {"x": x})) < 0.05


def test_unknown_float_output_op_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--float-output-op-type names unknown op type"):
        apply_precision(build_mlp(), int8(float_output_op_types=("Matmul",)), calibration=mlp_samples())


def count_pre_processing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import onnxruntime.quantization

    calls: list[str] = []
    real = onnxruntime.quantization.quant_pre_process

    def counted(*args: object, **kwargs: object) -> None:
        calls.append(str(args[0]))
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(onnxruntime.quantization, "quant_pre_process", counted)
    return calls


def test_a_table_skips_pre_processing_where_it_changed_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A conv net has nothing to fuse: the table's tensors are the raw graph's, so a rebuild from it
    skips pre-processing and gives the same graph and outputs."""
    samples = SampleSet({"img": np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)})
    calls = count_pre_processing(monkeypatch)
    calibrated = apply_precision(build_conv(), int8(), calibration=samples)
    assert len(calls) == 1
    assert calibrated.calibration_table is not None
    reused = apply_precision(build_conv(), int8(), calibration_table=calibrated.calibration_table)
    assert len(calls) == 1
    assert [n.op_type for n in reused.model.graph.node] == [n.op_type for n in calibrated.model.graph.node]
    x = {"img": samples.inputs["img"]}
    np.testing.assert_array_equal(run_model(reused.model, x), run_model(calibrated.model, x))


def test_a_table_of_a_fused_graph_is_applied_after_pre_processing(monkeypatch: pytest.MonkeyPatch) -> None:
    calibrated = apply_precision(build_mlp(), int8(), calibration=mlp_samples())
    assert calibrated.calibration_table is not None
    calls = count_pre_processing(monkeypatch)
    reused = apply_precision(build_mlp(), int8(), calibration_table=calibrated.calibration_table)
    assert len(calls) == 1  # MatMul+Add became Gemm: the table names the fused graph's tensors
    assert reused.model.SerializeToString() == calibrated.model.SerializeToString()
