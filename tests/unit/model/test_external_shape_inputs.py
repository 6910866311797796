"""Models saved with every tensor as external data (``onnx.save_model(..., size_threshold=0)``):
the small tensors whose values shape inference and the checker read (``Reshape`` shapes, axes,
``Slice`` bounds, ``ConstantOfShape`` shapes) sit in the data file next to weights too large to
read before validating. Such a model loads, validates, fingerprints and runs like the same model
saved inline, and the external-data rules still hold for it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_builders import save, save_all_external, shape_inputs_model
from onnx import numpy_helper

from kiln.errors import ModelError
from kiln.examples import EXAMPLES, make_model
from kiln.model.external import READ_BEFORE_VALIDATION_BYTES
from kiln.model.load import load_model, runtime_input
from kiln.model.validate import find_problems
from kiln.model.walk import is_external, tensors


def _external_names(path: Path) -> set[str]:
    return {t.name for t in tensors(onnx.load(str(path), load_external_data=False)) if is_external(t)}


def _run(model: bytes | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    [y] = session.run(None, {"x": x})
    return np.asarray(y)


def test_the_model_holds_shape_inputs_and_a_weight_too_large_to_read_first(tmp_path: Path) -> None:
    path = save_all_external(shape_inputs_model(), tmp_path / "m" / "model.onnx")

    assert _external_names(path) == {t.name for t in shape_inputs_model().graph.initializer}
    weight = next(t for t in shape_inputs_model().graph.initializer if t.name == "w")
    assert len(weight.raw_data) > READ_BEFORE_VALIDATION_BYTES


def test_a_model_with_every_tensor_external_loads_like_the_inline_one(tmp_path: Path) -> None:
    inline = load_model(save(shape_inputs_model(), tmp_path / "inline" / "model.onnx"))
    external = load_model(save_all_external(shape_inputs_model(), tmp_path / "external" / "model.onnx"))

    assert external.model is not None
    assert inline.model is not None
    assert not any(is_external(t) for t in tensors(external.model))
    assert external.fingerprint.structure_hash == inline.fingerprint.structure_hash
    assert external.fingerprint.weights_hash == inline.fingerprint.weights_hash
    assert external.fingerprint == inline.fingerprint
    assert external.inputs == inline.inputs
    assert external.outputs == inline.outputs
    x = np.random.default_rng(1).standard_normal((3, 128)).astype(np.float32)
    np.testing.assert_array_equal(_run(external.model, x), _run(inline.model, x))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_an_example_saved_with_every_tensor_external_keeps_its_fingerprint(tmp_path: Path, name: str) -> None:
    inline = load_model(save(make_model(name, size="tiny"), tmp_path / "inline" / "model.onnx"))
    path = save_all_external(make_model(name, size="tiny"), tmp_path / "external" / "model.onnx")
    assert _external_names(path)

    external = load_model(path)

    assert external.fingerprint.structure_hash == inline.fingerprint.structure_hash
    assert external.fingerprint.weights_hash == inline.fingerprint.weights_hash


def test_a_small_tensor_without_a_length_is_read_before_validating(tmp_path: Path) -> None:
    path = save_all_external(shape_inputs_model(), tmp_path / "m" / "model.onnx")
    model = onnx.load(str(path), load_external_data=False)
    # Move the Reshape shape to the end of its own file and drop its length: "to the end of the file".
    shape = next(t for t in model.graph.initializer if t.name == "shape")
    (path.parent / "shape.bin").write_bytes(np.array([-1, 10, 16], np.int64).tobytes())
    del shape.external_data[:]
    entry = shape.external_data.add()
    entry.key, entry.value = "location", "shape.bin"
    save(model, path)

    source = load_model(path)

    assert source.model is not None
    loaded = {t.name: numpy_helper.to_array(t) for t in source.model.graph.initializer}
    assert loaded["shape"].tolist() == [-1, 10, 16]


def test_a_wrong_declared_shape_is_still_found_with_external_data(tmp_path: Path) -> None:
    path = save_all_external(shape_inputs_model(out_width=7), tmp_path / "m" / "model.onnx")

    with pytest.raises(ModelError) as caught:
        load_model(path)

    [problem] = caught.value.problems
    assert problem.where == "node 'add' (Add)"
    assert "(6) vs (7)" in problem.what


def test_validating_a_model_whose_shape_inputs_are_not_read_names_the_tensor(tmp_path: Path) -> None:
    path = save_all_external(shape_inputs_model(), tmp_path / "m" / "model.onnx")
    model = onnx.load(str(path), load_external_data=False)  # nothing read, as a caller might

    problems = find_problems(model, path=path)

    assert problems, "shape inference cannot read external values; this must not pass silently"
    first = problems[0]
    assert first.where == "node 'reshape' (Reshape)"
    assert "needs the values of tensor 'shape', which are still in external data" in first.what
    assert "load_model" in first.fix
    assert "size_threshold" in first.fix


def _relocate(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for tensor in tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    save(model, path)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink out"])
def test_the_location_rules_hold_for_a_model_with_every_tensor_external(tmp_path: Path, kind: str) -> None:
    path = save_all_external(shape_inputs_model(), tmp_path / "m" / "model.onnx")
    outside = tmp_path / "outside.data"
    os.replace(path.parent / "model.onnx.data", outside)
    location = {"dotdot": "../outside.data", "absolute": str(outside), "symlink out": "model.onnx.data"}[kind]
    if kind == "symlink out":
        (path.parent / "model.onnx.data").symlink_to(outside)
    else:
        _relocate(path, location)

    for attempt in (load_model, runtime_input):
        with pytest.raises(ModelError) as caught:
            attempt(path)
        problems = caught.value.problems
        names = {t.name for t in shape_inputs_model().graph.initializer}
        assert {p.where for p in problems} == {f"tensor {name!r}" for name in names}
        problem = next(p for p in problems if p.where == "tensor 'shape'")
        assert repr(location) in problem.what
        assert "inside the model's folder" in problem.fix


def test_runtime_input_gives_onnx_runtime_the_whole_model(tmp_path: Path) -> None:
    inline_path = save(shape_inputs_model(), tmp_path / "inline" / "model.onnx")
    path = save_all_external(shape_inputs_model(), tmp_path / "external" / "model.onnx")

    data = runtime_input(path)

    assert isinstance(data, bytes)
    assert runtime_input(inline_path) == inline_path.read_bytes()
    x = np.random.default_rng(2).standard_normal((2, 128)).astype(np.float32)
    np.testing.assert_array_equal(_run(data, x), _run(inline_path.read_bytes(), x))
