from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_builders import FakeOpSupport, make_external, save, two_weight_model
from onnx import numpy_helper

from kiln.errors import ModelError
from kiln.model.external import load_external_data, plan_external_data
from kiln.model.fingerprint import fingerprint
from kiln.model.load import load_model
from kiln.model.validate import ModelLimits
from kiln.model.walk import is_external, tensors


def _values(model: onnx.ModelProto) -> dict[str, list[float]]:
    return {t.name: numpy_helper.to_array(t).tolist() for t in model.graph.initializer}


def _external_model(folder: Path, location_a: str, location_b: str | None = None) -> Path:
    """two_weight_model with ``a`` (and ``b`` when given) stored at the locations, files written
    relative to ``folder`` when the location is relative and inside it."""
    model = two_weight_model()
    for name, location in (("a", location_a), ("b", location_b)):
        if location is None:
            continue
        data = make_external(model, name, location)
        target = Path(location) if os.path.isabs(location) else folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return save(model, folder / "model.onnx")


def test_external_data_is_loaded_into_the_model_and_counted_in_the_size(tmp_path: Path) -> None:
    inline = two_weight_model()
    path = _external_model(tmp_path / "m", "weights/a.bin", "b.bin")

    source = load_model(path)

    assert source.model is not None
    assert not any(is_external(t) for t in tensors(source.model))
    assert _values(source.model) == _values(inline)
    expected_size = sum(
        p.stat().st_size for p in (path, path.parent / "weights/a.bin", path.parent / "b.bin")
    )
    assert source.size_bytes == expected_size
    assert source.fingerprint == fingerprint(inline)
    assert source.serialized is None  # the file's bytes are not the whole model
    onnx.checker.check_model(source.model, full_check=True)  # self-contained now


def test_one_shared_file_with_offsets_is_counted_once(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(
        two_weight_model(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )

    source = load_model(path)

    assert source.size_bytes == path.stat().st_size + (folder / "weights.bin").stat().st_size
    assert source.model is not None
    assert _values(source.model) == _values(two_weight_model())


def test_a_symlink_even_to_a_file_inside_the_folder_is_refused(tmp_path: Path) -> None:
    # onnx.checker refuses linked external data, so kiln refuses it up front with a clear message.
    path = _external_model(tmp_path / "m", "real.bin")
    (path.parent / "link.bin").symlink_to(path.parent / "real.bin")
    model = onnx.load(str(path), load_external_data=False)
    model.graph.initializer[0].external_data[0].value = "link.bin"
    save(model, path)

    with pytest.raises(ModelError) as caught:
        load_model(path)

    [problem] = caught.value.problems
    assert problem.where == "tensor 'a'"
    assert "'link.bin' is a symbolic link" in problem.what
    assert "replace the link by the file" in problem.fix


def _refused(path: Path) -> ModelError:
    with pytest.raises(ModelError) as caught:
        load_model(path)
    return caught.value


def test_a_location_climbing_out_with_dotdot_is_refused(tmp_path: Path) -> None:
    path = _external_model(tmp_path / "m", "../outside.bin")
    assert (tmp_path / "outside.bin").exists()  # the file is there; it is still refused

    error = _refused(path)

    [problem] = error.problems
    assert problem.where == "tensor 'a'"
    assert "'..'" in problem.what
    assert "../outside.bin" in problem.what
    assert "inside the model's folder" in problem.fix


def test_an_absolute_location_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "a.bin"
    path = _external_model(tmp_path / "m", str(outside))
    assert outside.exists()

    [problem] = _refused(path).problems

    assert "absolute" in problem.what
    assert str(outside) in problem.what


def test_a_symlink_pointing_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.bin"
    outside.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = _external_model(tmp_path / "m", "a.bin")
    (path.parent / "a.bin").unlink()
    (path.parent / "a.bin").symlink_to(outside)

    [problem] = _refused(path).problems

    assert problem.where == "tensor 'a'"
    assert "outside the model's folder" in problem.what
    assert str(outside) in problem.what
    assert "symlink" in problem.fix


def test_a_missing_external_file_is_reported(tmp_path: Path) -> None:
    path = _external_model(tmp_path / "m", "a.bin")
    (path.parent / "a.bin").unlink()

    [problem] = _refused(path).problems

    assert problem.where == "tensor 'a'"
    assert "'a.bin' is missing" in problem.what
    assert "next to the model file" in problem.fix


def test_a_range_past_the_end_of_the_file_is_reported(tmp_path: Path) -> None:
    path = _external_model(tmp_path / "m", "a.bin")
    (path.parent / "a.bin").write_bytes(b"\x00" * 8)  # the tensor needs 16 bytes

    [problem] = _refused(path).problems

    assert "needs bytes 0..16 of 'a.bin', which has 8 bytes" in problem.what


def test_external_data_counts_towards_the_size_limit_and_is_not_read(tmp_path: Path) -> None:
    path = _external_model(tmp_path / "m", "a.bin", "b.bin")
    limit = path.stat().st_size + 20  # the model file fits; with both 16-byte weight files it does not

    with pytest.raises(ModelError) as caught:
        load_model(path, limits=ModelLimits(max_file_bytes=limit))

    [problem] = caught.value.problems
    assert f"over the limit of {limit}" in problem.what
    assert problem.where == str(path)


def test_all_external_data_problems_are_listed_with_the_others(tmp_path: Path) -> None:
    path = _external_model(tmp_path / "m", "../up.bin", "gone.bin")
    (path.parent / "gone.bin").unlink()

    with pytest.raises(ModelError) as caught:
        load_model(path, op_support=FakeOpSupport(frozenset({"Mul"})))

    whats = [p.what for p in caught.value.problems]
    assert len(whats) == 3
    assert "'..'" in whats[0]
    assert "missing" in whats[1]
    assert "ai.onnx::Mul" in whats[2]


def test_planning_reads_no_data_and_resolves_inside_the_folder(tmp_path: Path) -> None:
    path = _external_model(tmp_path / "m", "a.bin", "b.bin")
    model = onnx.load(str(path), load_external_data=False)

    plan = plan_external_data(model, path.parent)

    assert plan.problems == ()
    assert [r.file.name for r in plan.reads] == ["a.bin", "b.bin"]
    assert plan.size_bytes == 32
    assert all(is_external(t) for t in model.graph.initializer)  # planning changed nothing


def test_a_file_that_shrank_after_planning_is_reported_not_half_loaded(tmp_path: Path) -> None:
    path = _external_model(tmp_path / "m", "a.bin")
    model = onnx.load(str(path), load_external_data=False)
    plan = plan_external_data(model, path.parent)
    (path.parent / "a.bin").write_bytes(b"\x00" * 4)

    [problem] = load_external_data(plan)

    assert problem.where == "tensor 'a'"
    assert "read 4 of 16 bytes" in problem.what
    assert is_external(model.graph.initializer[0])


def _reshape_model_all_external(folder: Path) -> Path:
    """A Reshape whose shape input is external data, as ``onnx.save(..., size_threshold=0)`` writes."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 16])
    shape = numpy_helper.from_array(np.array([-1, 16], dtype=np.int64), "shape")
    weight = numpy_helper.from_array(np.eye(16, dtype=np.float32), "w")
    nodes = [
        onnx.helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        onnx.helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    graph = onnx.helper.make_graph(nodes, "g", [x], [y], [shape, weight])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    return path


def test_a_shape_input_stored_as_external_data_is_read_for_validation(tmp_path: Path) -> None:
    path = _reshape_model_all_external(tmp_path / "m")
    assert all(is_external(t) for t in onnx.load(str(path), load_external_data=False).graph.initializer)

    source = load_model(path)

    loaded = {t.name: numpy_helper.to_array(t) for t in source.model.graph.initializer}
    assert loaded["shape"].tolist() == [-1, 16]
    assert loaded["w"].shape == (16, 16)
    assert not any(is_external(t) for t in source.model.graph.initializer)


def test_a_small_first_read_leaves_the_large_tensors_external(tmp_path: Path) -> None:
    path = _reshape_model_all_external(tmp_path / "m")
    model = onnx.load(str(path), load_external_data=False)
    plan = plan_external_data(model, path.parent)

    assert load_external_data(plan, at_most=16) == []  # the 16-byte shape, not the 1 KiB weight

    external = {t.name: is_external(t) for t in model.graph.initializer}
    assert external == {"shape": False, "w": True}
    assert load_external_data(plan) == []
    assert not any(is_external(t) for t in model.graph.initializer)
