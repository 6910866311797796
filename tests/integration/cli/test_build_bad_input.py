"""``kiln build`` on every kind of bad input: exit code 2 (1 for a busy cache), a message naming the
thing, the value and the fix, and a cache left untouched."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from build_helpers import Example, assert_cache_untouched, kiln, kiln_command
from onnx import TensorProto, helper, numpy_helper

from kiln.cache.key import engine_key
from kiln.cache.store import EngineStore
from kiln.cli.build import BuildOptions
from kiln.compile.registry import create_backend
from kiln.examples import EXAMPLES
from kiln.model.load import load_model


def tiny_graph(
    nodes: list[onnx.NodeProto] | None = None,
    *,
    input_shape: tuple[object, ...] = ("batch", 3),
    opsets: tuple[tuple[str, int], ...] = (("", 17),),
    ir_version: int = 8,
    weights: bool = False,
) -> onnx.ModelProto:
    """``y = Relu(x)`` (or ``nodes``) with ``x: [batch, 3]``; ``weights`` adds ``w`` to it."""
    if nodes is None:
        nodes = [helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
        weights = True
    initializers = [numpy_helper.from_array(np.ones(3, np.float32), "w")] if weights else []
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = ir_version
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def refused(args: list[str], cache_dir: Path, *, code: int = 2) -> str:
    """Run ``kiln build ARGS``; assert the exit code and an untouched cache; return stderr."""
    outcome = kiln([*args, "--cache-dir", str(cache_dir)])
    assert outcome.exit_code == code, outcome.stdout + outcome.stderr
    assert outcome.stderr.startswith("error: ")
    assert_cache_untouched(cache_dir)
    return " ".join(outcome.stderr.split())


# -- the model file ------------------------------------------------------------------------------


def test_a_folder_is_not_a_model(tmp_path: Path, cache_dir: Path) -> None:
    save(tiny_graph(), tmp_path / "models" / "net.onnx")
    text = refused(["build", str(tmp_path / "models")], cache_dir)
    assert "is a folder, not a model file" in text
    assert "net.onnx" in text  # the fix names the file inside


def test_a_missing_file(tmp_path: Path, cache_dir: Path) -> None:
    text = refused(["build", str(tmp_path / "nope.onnx")], cache_dir)
    assert "nope.onnx" in text
    assert "does not exist" in text


def test_a_file_that_is_not_onnx(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("these are not the weights you are looking for\n" * 20)
    text = refused(["build", str(path)], cache_dir)
    assert "notes.onnx" in text
    assert "protobuf cannot parse it" in text


def test_a_truncated_model(examples: dict[str, Example], tmp_path: Path, cache_dir: Path) -> None:
    data = examples["ctr"].model.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 3])
    text = refused(["build", str(path)], cache_dir)
    assert "cut.onnx" in text
    assert "truncated" in text


def test_a_model_failing_the_checker(tmp_path: Path, cache_dir: Path) -> None:
    path = save(tiny_graph([helper.make_node("Relu", ["nowhere"], ["y"], name="act")]), tmp_path / "m.onnx")
    text = refused(["build", str(path)], cache_dir)
    assert "node 'act' (Relu)" in text
    assert "ONNX checker" in text
    assert "'nowhere'" in text


def test_an_op_the_backend_cannot_run(tmp_path: Path, cache_dir: Path) -> None:
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example", name="frob")
    path = save(tiny_graph([node], opsets=(("", 17), ("com.example", 1))), tmp_path / "m.onnx")
    text = refused(["build", str(path)], cache_dir)
    assert "com.example::Frobnicate" in text
    assert "cannot run on this backend" in text
    assert "re-export the model with standard ONNX ops" in text


def test_external_data_escaping_the_model_folder(tmp_path: Path, cache_dir: Path) -> None:
    model = tiny_graph()
    onnx.external_data_helper.convert_model_to_external_data(
        model, location="../outside.bin", size_threshold=0
    )
    (tmp_path / "outside.bin").write_bytes(np.ones(3, np.float32).tobytes())
    path = save(model, tmp_path / "model" / "m.onnx")
    text = refused(["build", str(path)], cache_dir)
    assert "tensor 'w'" in text
    assert "climbs out with '..'" in text
    assert "'../outside.bin'" in text


def test_missing_external_data(tmp_path: Path, cache_dir: Path) -> None:
    model = tiny_graph()
    onnx.external_data_helper.convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    path = save(model, tmp_path / "m.onnx")
    text = refused(["build", str(path)], cache_dir)
    assert "'weights.bin' is missing" in text
    assert "copy the weights file next to the model" in text


def test_an_absurd_declared_dim(tmp_path: Path, cache_dir: Path) -> None:
    path = save(tiny_graph(input_shape=("batch", 10**12)), tmp_path / "m.onnx")
    text = refused(["build", str(path)], cache_dir)
    assert "input 'x'" in text
    assert "declares dim 1000000000000" in text


def test_an_ir_version_newer_than_onnxruntime_reads(tmp_path: Path, cache_dir: Path) -> None:
    newest = create_backend("onnxruntime").model_limits().max_ir_version
    assert newest is not None
    path = save(tiny_graph(ir_version=newest + 1), tmp_path / "m.onnx")
    text = refused(["build", str(path)], cache_dir)
    assert f"IR version {newest + 1} is newer than the {newest}" in text
    assert f"model.ir_version = {newest}" in text


# -- calibration and validation samples ------------------------------------------------------------


def samples(tmp_path: Path, **arrays: np.ndarray) -> Path:
    folder = tmp_path / "samples"
    folder.mkdir()
    np.savez(folder / "part-0.npz", **arrays)  # type: ignore[arg-type]
    return folder


def int8_args(example: Example, calibration: Path) -> list[str]:
    return ["build", str(example.model), "--precision", "int8", "--calibration", str(calibration)]


def test_calibration_with_wrong_input_names(
    examples: dict[str, Example], tmp_path: Path, cache_dir: Path
) -> None:
    folder = samples(tmp_path, dense=np.zeros((8, 13), np.float32), ids=np.zeros((8, 26), np.int64))
    text = refused(int8_args(examples["ctr"], folder), cache_dir)
    assert "calibration samples do not fit the model" in text
    assert "unknown input 'ids'" in text
    assert "missing input 'sparse'" in text
    assert "sparse INT64 [-1, 26]" in text  # the fix lists the model's inputs


def test_calibration_with_wrong_dtypes(examples: dict[str, Example], tmp_path: Path, cache_dir: Path) -> None:
    folder = samples(tmp_path, dense=np.zeros((8, 13), np.float64), sparse=np.zeros((8, 26), np.int32))
    text = refused(int8_args(examples["ctr"], folder), cache_dir)
    assert "input 'dense' is FP64, the model wants FP32" in text
    assert "input 'sparse' is INT32, the model wants INT64" in text


def test_calibration_with_wrong_shapes(examples: dict[str, Example], tmp_path: Path, cache_dir: Path) -> None:
    folder = samples(tmp_path, dense=np.zeros((8, 12), np.float32), sparse=np.zeros((8, 26), np.int64))
    text = refused(int8_args(examples["ctr"], folder), cache_dir)
    assert "input 'dense' has shape [8, 12], the model wants [-1, 13]" in text


def test_an_empty_calibration_folder(examples: dict[str, Example], tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    text = refused(int8_args(examples["ctr"], tmp_path / "empty"), cache_dir)
    assert f"calibration folder {tmp_path / 'empty'} holds no .npz files" in text
    assert "put .npz files" in text


def test_int8_without_calibration(examples: dict[str, Example], cache_dir: Path) -> None:
    text = refused(["build", str(examples["ctr"].model), "--precision", "int8"], cache_dir)
    assert "int8 needs calibration data" in text
    assert "--calibration DIR" in text


def test_an_empty_validation_folder(examples: dict[str, Example], tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    text = refused(["build", str(examples["ctr"].model), "--validation", str(tmp_path / "empty")], cache_dir)
    assert "validation folder" in text
    assert "holds no .npz files" in text


def test_validation_with_wrong_names_is_refused_before_anything_is_stored(
    examples: dict[str, Example], tmp_path: Path, cache_dir: Path
) -> None:
    folder = samples(tmp_path, pixels=np.zeros((4, 3, 32, 32), np.float32))
    text = refused(
        ["build", str(examples["cnn"].model), "--precision", "fp16", "--validation", str(folder)], cache_dir
    )
    assert "validation samples do not fit the model" in text
    assert "unknown input 'pixels'" in text


def test_ctr_accuracy_without_labels(examples: dict[str, Example], tmp_path: Path, cache_dir: Path) -> None:
    folder = samples(tmp_path, dense=np.ones((64, 13), np.float32), sparse=np.zeros((64, 26), np.int64))
    text = refused(
        [
            "build",
            str(examples["ctr"].model),
            "--precision",
            "fp16",
            "--task",
            "ctr",
            "--validation",
            str(folder),
        ],
        cache_dir,
    )
    assert "task 'ctr'" in text
    assert "no" in text
    assert "_label" in text


def test_an_accuracy_bound_without_samples(examples: dict[str, Example], cache_dir: Path) -> None:
    text = refused(["build", str(examples["ctr"].model), "--max-accuracy-drop", "0.01"], cache_dir)
    assert "max_accuracy_drop=0.01" in text
    assert "--validation DIR" in text


# -- profiles ------------------------------------------------------------------------------------------


def test_a_profile_whose_min_is_above_its_max(examples: dict[str, Example], cache_dir: Path) -> None:
    args = ["build", str(examples["ctr"].model), "--profile", "dense:64x13,8x13,1x13"]
    text = refused(args, cache_dir)
    assert "--profile" in text
    assert "'dense'" in text
    assert "min <= opt <= max" in text
    assert "(64, 13)" in text


def test_a_profile_that_is_not_written_right(examples: dict[str, Example], cache_dir: Path) -> None:
    text = refused(["build", str(examples["ctr"].model), "--profile", "dense:1x13,64x13"], cache_dir)
    assert "'dense:1x13,64x13' is not NAME:MIN,OPT,MAX" in text


def test_a_profile_not_matching_the_model(examples: dict[str, Example], cache_dir: Path) -> None:
    args = [
        "build",
        str(examples["ctr"].model),
        "--profile",
        "dense:1x12,8x12,32x12",
        "--profile",
        "image:1x3,1x3,1x3",
    ]
    text = refused(args, cache_dir)
    assert "profile for 'dense' allows 12..12 on axis 1, which the model fixes at 13" in text
    assert "profile for unknown input 'image'" in text
    assert "dense:1x13,8x13,32x13" in text  # the fix shows profiles that fit


def test_a_profile_with_another_rank_or_a_batch_above_the_limit(
    examples: dict[str, Example], cache_dir: Path
) -> None:
    args = [
        "build",
        str(examples["ctr"].model),
        "--profile",
        "dense:1,8,32",
        "--profile",
        "sparse:1x26,8x26,64x26",
    ]
    text = refused([*args, "--max-batch-size", "32"], cache_dir)
    assert "profile for 'dense' has rank 1" in text
    assert "allows batch 64, above max_batch_size 32" in text


# -- options ---------------------------------------------------------------------------------------------


def test_options_out_of_bounds_are_named(examples: dict[str, Example], cache_dir: Path) -> None:
    args = ["build", str(examples["ctr"].model), "--max-batch-size", "0", "--calibration-samples", "0"]
    text = refused(args, cache_dir)
    assert "--max-batch-size" in text
    assert "--calibration-samples" in text
    assert "greater than or equal to 1" in text


def test_errors_as_json(examples: dict[str, Example], tmp_path: Path, cache_dir: Path) -> None:
    outcome = kiln(["build", str(tmp_path / "nope.onnx"), "--json", "--cache-dir", str(cache_dir)])
    assert outcome.exit_code == 2
    body = json.loads(outcome.stdout)
    assert body["ok"] is False
    assert body["exit_code"] == 2
    assert body["error"]["type"] == "ModelError"
    assert "does not exist" in body["error"]["message"]


# -- accuracy and the cache ------------------------------------------------------------------------------


def test_an_accuracy_drop_over_the_bound_stores_nothing(
    examples: dict[str, Example], cache_dir: Path
) -> None:
    example = examples["cnn"]
    text = refused(example.args("--precision", "int8", "--max-accuracy-drop", "0"), cache_dir)
    assert "accuracy against fp32 is below the bound: top-1 agreement" in text
    assert "> max_accuracy_drop 0" in text
    assert "--keep-fp32 NODE" in text


def key_of(example: Example, *extra: str) -> str:
    """The cache key ``kiln build`` computes for the example with these extra options."""
    args = example.args(*extra)
    options = BuildOptions(
        model=example.model,
        profile=tuple(args[i + 1] for i, a in enumerate(args) if a == "--profile"),
        task=example.task,  # type: ignore[arg-type]
        max_batch_size=EXAMPLES[example.name].max_batch_size,
        precision=args[args.index("--precision") + 1] if "--precision" in args else "fp32",  # type: ignore[arg-type]
    )
    source = load_model(example.model)
    return engine_key(
        source.fingerprint.structure_hash, options.spec(), create_backend("onnxruntime").target()
    ).hex


def test_a_busy_cache_key_gives_up_after_the_wait(examples: dict[str, Example], cache_dir: Path) -> None:
    example = examples["ctr"]
    with EngineStore(cache_dir).lock(key_of(example)):
        text = refused(example.args("--wait-s", "0.1"), cache_dir, code=1)
    assert "is locked by another builder" in text
    assert "still locked after 0.1 s" in text


def test_two_builds_of_one_key_at_once(examples: dict[str, Example], cache_dir: Path) -> None:
    """Two processes started together ask for the same engine: one builds it, the other waits on
    the key's lock and finds the finished engine (or, had it come second, a hit all the same)."""
    example = examples["cnn"]
    args = [*kiln_command(), *example.args("--precision", "int8", "--json", "--cache-dir", str(cache_dir))]
    runs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    reports = [json.loads(out) for out, _ in outputs]
    assert sorted(r["path"] for r in reports) == ["build", "hit"]
    assert reports[0]["key"] == reports[1]["key"] == key_of(example, "--precision", "int8")
    assert len(EngineStore(cache_dir).list_entries()) == 1


@pytest.mark.parametrize("damage", ["engine bytes", "missing file"])
def test_a_corrupted_entry_is_rebuilt_never_served(
    examples: dict[str, Example], cache_dir: Path, damage: str
) -> None:
    example = examples["ranker"]
    args = example.args("--json", "--cache-dir", str(cache_dir))
    first = json.loads(kiln(args).stdout)
    engine = Path(first["artifact"]) / "engine.onnx"
    good = engine.read_bytes()
    if damage == "engine bytes":
        engine.write_bytes(good[:-64] + b"\0" * 64)
    else:
        engine.unlink()

    outcome = kiln(args)

    assert outcome.exit_code == 0, outcome.stderr
    again = json.loads(outcome.stdout)
    assert again["path"] == "build"
    assert again["artifact"] == first["artifact"]
    assert "corrupt" in outcome.stderr or "missing" in outcome.stderr  # the warning says why
    assert engine.read_bytes() == good
    assert len(EngineStore(cache_dir).list_entries()) == 1


def test_a_backend_this_installation_lacks(examples: dict[str, Example], cache_dir: Path) -> None:
    text = refused(["build", str(examples["ctr"].model), "--backend", "tensorrt"], cache_dir)
    assert "backend 'tensorrt'" in text
    assert "--backend onnxruntime" in text
