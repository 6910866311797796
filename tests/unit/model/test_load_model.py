from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from model_builders import FakeOpSupport, save, tiny_model
from onnx import TensorProto, helper, numpy_helper

from kiln.errors import ModelError
from kiln.model.fingerprint import fingerprint
from kiln.model.load import load_model
from kiln.model.validate import ModelLimits
from kiln.types import TensorSpec


def _only_problem(error: ModelError) -> str:
    assert len(error.problems) == 1, error
    return str(error.problems[0])


def test_loads_a_valid_model_with_its_signature_size_and_fingerprint(tmp_path: Path) -> None:
    model = tiny_model(input_shape=("batch", 3), output_shape=(None, 3))
    path = save(model, tmp_path / "tiny.onnx")

    source = load_model(path)

    assert source.format == "onnx"
    assert source.path == path
    assert source.name == "tiny"
    assert source.inputs == (TensorSpec("x", "FP32", (-1, 3)),)
    assert source.outputs == (TensorSpec("y", "FP32", (-1, 3)),)
    assert source.size_bytes == path.stat().st_size
    assert source.model is not None
    assert source.fingerprint == fingerprint(model)


def test_initializers_listed_as_inputs_in_old_ir_are_not_inputs(tmp_path: Path) -> None:
    model = tiny_model()
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [3]))
    model.ir_version = 3
    model.opset_import[0].version = 11

    source = load_model(save(model, tmp_path / "old.onnx"))

    assert [spec.name for spec in source.inputs] == ["x"]


def test_an_input_of_an_element_type_kiln_cannot_carry_is_reported(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["z"], ["y"], name="id")],
        "complex",
        [helper.make_tensor_value_info("z", TensorProto.COMPLEX64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.COMPLEX64, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    with pytest.raises(ModelError) as caught:
        load_model(save(model, tmp_path / "complex.onnx"))

    wheres = {p.where for p in caught.value.problems}
    assert wheres == {"input 'z'", "output 'y'"}
    assert all("COMPLEX64" in p.what and "FLOAT16" in p.fix for p in caught.value.problems)


def test_a_pt2_file_is_left_to_the_torch_backend(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(b"PK\x03\x04 not for us")

    with pytest.raises(ModelError) as caught:
        load_model(path)

    assert "torch backend" in _only_problem(caught.value)
    assert caught.value.path == str(path)


def _write_bad_file(kind: str, folder: Path) -> Path:
    path = folder / "bad.onnx"
    good = tiny_model().SerializeToString()
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(7).bytes(4096))
    elif kind == "text":
        path.write_text("name: not a model\nlayers: [1, 2, 3]\n" * 20)
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "cut before the graph":
        path.write_bytes(good[:2])  # ir_version only
    return path


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("missing", "does not exist"),
        ("directory", "is a folder"),
        ("empty", "is empty"),
        ("random bytes", "not an ONNX model"),
        ("text", "not an ONNX model"),
        ("truncated", "truncated"),
        ("cut before the graph", "no graph"),
    ],
)
def test_a_bad_file_gets_one_clear_error_naming_the_path(tmp_path: Path, kind: str, said: str) -> None:
    path = _write_bad_file(kind, tmp_path)

    with pytest.raises(ModelError) as caught:
        load_model(path)

    error = caught.value
    assert said in _only_problem(error)
    assert error.problems[0].where == str(path)
    assert error.problems[0].fix
    assert str(path) in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None  # no protobuf traceback attached


def test_a_model_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.onnx"
    path.write_bytes(b"\x00" * 2048)  # not even ONNX: the size check comes first

    with pytest.raises(ModelError) as caught:
        load_model(path, limits=ModelLimits(max_file_bytes=1024))

    assert "2048 bytes, over the limit of 1024" in _only_problem(caught.value)


def test_an_unsupported_operator_names_its_nodes_and_the_backends_fix(tmp_path: Path) -> None:
    model = tiny_model(
        nodes=[
            helper.make_node("Add", ["x", "w"], ["s"], name="add"),
            helper.make_node("Relu", ["s"], ["r"], name="relu1"),
            helper.make_node("Relu", ["r"], ["y"], name="relu2"),
        ]
    )

    with pytest.raises(ModelError) as caught:
        load_model(save(model, tmp_path / "m.onnx"), op_support=FakeOpSupport(frozenset({"Relu"})))

    problem = caught.value.problems[0]
    assert len(caught.value.problems) == 1
    assert problem.where == "node 'relu1' (Relu) and 1 more node(s) like it"
    assert "ai.onnx::Relu (opset 17)" in problem.what
    assert problem.fix == "the fake backend has no Relu; replace it or choose another backend"


def test_a_supported_model_passes_the_op_check(tmp_path: Path) -> None:
    source = load_model(
        save(tiny_model(), tmp_path / "m.onnx"), op_support=FakeOpSupport(frozenset({"Conv"}))
    )
    assert source.inputs[0].name == "x"


def test_an_absurd_declared_dim_is_refused(tmp_path: Path) -> None:
    model = tiny_model(input_shape=(3_000_000_000, 3), output_shape=(3_000_000_000, 3))

    with pytest.raises(ModelError) as caught:
        load_model(save(model, tmp_path / "m.onnx"))

    dims = [p for p in caught.value.problems if "3000000000" in p.what]
    assert {p.where for p in dims} == {"input 'x'", "output 'y'"}
    assert all("max_dim_elements" in p.fix for p in dims)


def test_a_static_element_count_over_the_limit_is_refused(tmp_path: Path) -> None:
    model = tiny_model(input_shape=(100_000, 3), output_shape=(100_000, 3))

    with pytest.raises(ModelError) as caught:
        load_model(save(model, tmp_path / "m.onnx"), limits=ModelLimits(max_dim_elements=200_000))

    assert [p.where for p in caught.value.problems] == ["input 'x'", "output 'y'"]
    assert "300000 elements" in caught.value.problems[0].what


def test_a_model_failing_the_checker_names_the_node(tmp_path: Path) -> None:
    model = tiny_model(
        nodes=[
            helper.make_node("Add", ["x", "w"], ["s"], name="add"),
            helper.make_node("Relu", ["s"], ["y"], name="relu", slope=0.1),
        ]
    )

    with pytest.raises(ModelError) as caught:
        load_model(save(model, tmp_path / "m.onnx"))

    problem = caught.value.problems[0]
    assert problem.where == "node 'relu' (Relu)"
    assert "fails the ONNX checker" in problem.what
    assert "slope" in problem.what


def test_strict_shape_inference_failures_name_the_node(tmp_path: Path) -> None:
    model = tiny_model(weights=np.zeros(5, np.float32))  # [batch, 3] + [5] does not broadcast

    with pytest.raises(ModelError) as caught:
        load_model(save(model, tmp_path / "m.onnx"))

    problem = caught.value.problems[0]
    assert problem.where == "node 'add' (Add)"
    assert "shape inference" in problem.what


@pytest.mark.parametrize("opset", [9, 24])
def test_an_opset_outside_the_limits_is_refused(tmp_path: Path, opset: int) -> None:
    with pytest.raises(ModelError) as caught:
        load_model(save(tiny_model(opset=opset), tmp_path / "m.onnx"))

    problem = next(p for p in caught.value.problems if p.where == "opset_import")
    assert f"opset {opset} is outside 11..23" in problem.what
    assert "version_converter" in problem.fix


def test_a_model_without_inputs_is_refused(tmp_path: Path) -> None:
    value = numpy_helper.from_array(np.ones(2, np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["c"], ["y"], name="relu")],
        "const",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [value],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    with pytest.raises(ModelError) as caught:
        load_model(save(model, tmp_path / "m.onnx"))

    assert "has no inputs" in _only_problem(caught.value)


def test_every_problem_is_collected_into_one_error(tmp_path: Path) -> None:
    model = tiny_model(opset=24, input_shape=(-5, 3))
    model.graph.output.append(helper.make_tensor_value_info("extra", TensorProto.COMPLEX128, [2]))

    with pytest.raises(ModelError) as caught:
        load_model(save(model, tmp_path / "m.onnx"), op_support=FakeOpSupport(frozenset({"Add"})))

    wheres = [p.where for p in caught.value.problems]
    assert "opset_import" in wheres
    assert "input 'x'" in wheres
    assert "output 'extra'" in wheres
    assert "node 'add' (Add)" in wheres
    text = str(caught.value)
    assert f"{len(caught.value.problems)} problem(s)" in text
    assert "-5" in text
    assert "COMPLEX128" in text


def test_loaded_model_is_in_memory_and_independent_of_the_file(tmp_path: Path) -> None:
    path = save(tiny_model(), tmp_path / "m.onnx")
    source = load_model(path)
    path.unlink()

    assert source.model is not None
    onnx.checker.check_model(source.model)
    assert numpy_helper.to_array(source.model.graph.initializer[0]).tolist() == [0.5, -1.0, 2.0]


def test_a_self_contained_model_keeps_its_file_bytes(tmp_path: Path) -> None:
    path = save(tiny_model(), tmp_path / "tiny.onnx")

    source = load_model(path)

    assert source.serialized == path.read_bytes()
