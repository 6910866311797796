from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_builders import make_external, tiny_model, two_weight_model
from onnx import TensorProto, helper, numpy_helper

from kiln.errors import ModelError
from kiln.model.fingerprint import fingerprint
from kiln.model.source import Fingerprint

HEX64 = re.compile(r"[0-9a-f]{64}")


def test_a_fingerprint_is_two_sha256_digests_with_opsets_and_ir_version() -> None:
    model = tiny_model(opset=17)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))

    fp = fingerprint(model)

    assert HEX64.fullmatch(fp.structure_hash)
    assert HEX64.fullmatch(fp.weights_hash)
    assert fp.structure_hash != fp.weights_hash
    assert fp.opsets == (("ai.onnx", 17), ("com.microsoft", 1))
    assert fp.ir_version == model.ir_version
    assert Fingerprint.from_json(fp.to_json()) == fp


def _raw_and_typed(data_type: int, values: list[object]) -> tuple[onnx.TensorProto, onnx.TensorProto]:
    typed = helper.make_tensor("w", data_type, [len(values)], values, raw=False)
    array = numpy_helper.to_array(typed)
    if data_type == TensorProto.STRING:
        return typed, typed  # strings have no raw form
    raw = numpy_helper.from_array(array, "w")
    assert raw.HasField("raw_data")
    return raw, typed


def _with_initializer(tensor: onnx.TensorProto) -> onnx.ModelProto:
    model = tiny_model()
    model.graph.initializer[0].CopyFrom(tensor)
    return model


@pytest.mark.parametrize(
    ("data_type", "values"),
    [
        (TensorProto.FLOAT, [0.5, -1.0, 3.25]),
        (TensorProto.DOUBLE, [0.5, -1.0, 3.25]),
        (TensorProto.FLOAT16, [0.5, -1.0, 3.25]),
        (TensorProto.BFLOAT16, [0.5, -1.0, 3.25]),
        (TensorProto.INT64, [1, -2, 3]),
        (TensorProto.INT8, [1, -2, 3]),
        (TensorProto.UINT8, [1, 2, 255]),
        (TensorProto.BOOL, [True, False, True]),
        (TensorProto.INT4, [1, -2, 3]),
        (TensorProto.FLOAT8E4M3FN, [0.5, -1.0, 2.0]),
    ],
)
def test_weights_hash_does_not_depend_on_raw_or_typed_storage(data_type: int, values: list[object]) -> None:
    raw, typed = _raw_and_typed(data_type, values)
    assert raw.SerializeToString() != typed.SerializeToString()

    assert fingerprint(_with_initializer(raw)) == fingerprint(_with_initializer(typed))


def test_string_initializers_are_hashed_by_value() -> None:
    a = helper.make_tensor("w", TensorProto.STRING, [2], [b"ab", b"c"])
    b = helper.make_tensor("w", TensorProto.STRING, [2], [b"a", b"bc"])
    assert fingerprint(_with_initializer(a)).weights_hash != fingerprint(_with_initializer(b)).weights_hash


def test_doc_strings_and_producer_metadata_do_not_count() -> None:
    plain = tiny_model()
    dressed = tiny_model()
    dressed.producer_name, dressed.producer_version = "exporter", "9.9"
    dressed.model_version, dressed.domain, dressed.doc_string = 42, "com.example", "a model"
    helper.set_model_props(dressed, {"trained_on": "yesterday"})
    dressed.graph.doc_string = "the graph"
    dressed.graph.node[0].doc_string = "adds"
    dressed.graph.input[0].doc_string = "features"
    dressed.graph.initializer[0].doc_string = "bias"

    assert fingerprint(dressed) == fingerprint(plain)


def test_opset_spelling_and_order_and_initializer_order_do_not_count() -> None:
    a = two_weight_model()
    a.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    b = two_weight_model()
    b.opset_import.insert(0, helper.make_opsetid("com.microsoft", 1))
    b.opset_import[1].domain = "ai.onnx"
    b.graph.initializer.reverse()

    assert fingerprint(a) == fingerprint(b)


def _if_model(then_scale: float, branch_bias: float) -> onnx.ModelProto:
    bias = numpy_helper.from_array(np.array([branch_bias] * 3, np.float32), "branch_bias")
    then_graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "branch_bias"], ["b"], name="then_add"),
            helper.make_node("LeakyRelu", ["b"], ["t"], name="then_leaky", alpha=then_scale),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["batch", 3])],
        [bias],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"], name="else_neg")],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["batch", 3])],
    )
    condition = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    return tiny_model(
        nodes=[
            helper.make_node("Constant", [], ["c"], name="cond", value=condition),
            helper.make_node("If", ["c"], ["i"], name="if", then_branch=then_graph, else_branch=else_graph),
            helper.make_node("Add", ["i", "w"], ["y"], name="add"),
        ]
    )


def test_subgraph_attributes_are_structure_and_subgraph_initializers_are_weights() -> None:
    base = fingerprint(_if_model(then_scale=0.1, branch_bias=1.0))
    other_attribute = fingerprint(_if_model(then_scale=0.2, branch_bias=1.0))
    other_weights = fingerprint(_if_model(then_scale=0.1, branch_bias=2.0))

    assert other_attribute.structure_hash != base.structure_hash
    assert other_attribute.weights_hash == base.weights_hash
    assert other_weights.structure_hash == base.structure_hash
    assert other_weights.weights_hash != base.weights_hash


def test_constant_node_values_are_structure() -> None:
    def model(value: bool) -> onnx.ModelProto:
        m = _if_model(0.1, 1.0)
        m.graph.node[0].attribute[0].t.CopyFrom(helper.make_tensor("c", TensorProto.BOOL, [], [value]))
        return m

    assert fingerprint(model(True)).structure_hash != fingerprint(model(False)).structure_hash
    assert fingerprint(model(True)).weights_hash == fingerprint(model(False)).weights_hash


def _sparse_model(
    indices: np.ndarray, values: list[float], dims: tuple[int, int] = (2, 3)
) -> onnx.ModelProto:
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array(values, np.float32), "s"),
        numpy_helper.from_array(indices.astype(np.int64), "s_indices"),
        list(dims),
    )
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "s"], ["y"], name="add")],
        "sparse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))],
        sparse_initializer=[sparse],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_sparse_initializers_hash_by_position_and_value_not_by_index_layout() -> None:
    linear = _sparse_model(np.array([1, 5]), [7.0, 9.0])
    coordinates = _sparse_model(np.array([[0, 1], [1, 2]]), [7.0, 9.0])
    shuffled = _sparse_model(np.array([5, 1]), [9.0, 7.0])
    other_value = _sparse_model(np.array([1, 5]), [7.0, 8.0])
    other_dims = _sparse_model(np.array([1, 5]), [7.0, 9.0], dims=(3, 2))

    base = fingerprint(linear)
    assert fingerprint(coordinates) == base
    assert fingerprint(shuffled) == base
    assert fingerprint(other_value).structure_hash == base.structure_hash
    assert fingerprint(other_value).weights_hash != base.weights_hash
    assert fingerprint(other_dims).structure_hash != base.structure_hash
    onnx.checker.check_model(linear)


def test_unloaded_external_data_cannot_be_fingerprinted() -> None:
    model = two_weight_model()
    make_external(model, "a", "a.bin")

    with pytest.raises(ModelError) as caught:
        fingerprint(model)

    [problem] = caught.value.problems
    assert problem.where == "tensor 'a'"
    assert "load_model" in problem.fix


def test_external_data_saved_and_loaded_back_hashes_the_same(tmp_path: Path) -> None:
    model = two_weight_model()
    expected = fingerprint(model)
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    assert (tmp_path / "w.bin").exists()

    assert fingerprint(onnx.load(str(path))) == expected
