from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx
import pytest
from model_builders import FakeOpSupport, make_external, save, tiny_model, two_weight_model
from onnx import TensorProto, helper

from kiln.errors import ConfigError, ModelError, Problem
from kiln.model.validate import ModelLimits, find_problems, validate


def test_a_valid_model_has_no_problems() -> None:
    assert find_problems(tiny_model(), op_support=FakeOpSupport()) == []
    validate(tiny_model())  # does not raise


def test_problems_found_earlier_lead_the_error_and_name_the_path() -> None:
    earlier = Problem("tensor 'w'", "was found earlier", "fix it")

    with pytest.raises(ModelError) as caught:
        validate(tiny_model(opset=9), path=Path("m.onnx"), found=[earlier])

    assert caught.value.problems[0] == earlier
    assert caught.value.problems[1].where == "opset_import"
    assert caught.value.path == "m.onnx"
    assert str(caught.value).startswith("model m.onnx is not usable: 2 problem(s)")


def test_the_size_limit_is_checked_when_a_size_is_given() -> None:
    problems = find_problems(tiny_model(), size_bytes=5000, limits=ModelLimits(max_file_bytes=4096))
    assert [p.what for p in problems] == ["is 5000 bytes with its external data, over the limit of 4096"]


def test_unloaded_external_data_without_a_path_cannot_be_checked_in_memory() -> None:
    model = two_weight_model()
    make_external(model, "a", "a.bin")

    problems = find_problems(model)

    assert [p.what for p in problems] == [
        "is too large or has unloaded external data, so it cannot be checked in memory"
    ]


def test_unloaded_external_data_is_checked_through_the_path(tmp_path: Path) -> None:
    model = two_weight_model()
    (tmp_path / "a.bin").write_bytes(make_external(model, "a", "a.bin"))
    path = save(model, tmp_path / "m.onnx")

    assert find_problems(model, path=path) == []


def test_run_checker_false_skips_only_the_checker() -> None:
    model = tiny_model(
        opset=9,
        nodes=[
            helper.make_node("Add", ["x", "w"], ["s"], name="add"),
            helper.make_node("Relu", ["s"], ["y"], name="relu", slope=1.0),
        ],
    )
    wheres = [p.where for p in find_problems(model, run_checker=False)]
    assert wheres == ["opset_import"]
    assert "node 'relu' (Relu)" in [p.where for p in find_problems(model)]


def test_a_model_without_a_default_domain_opset_is_refused() -> None:
    model = tiny_model()
    del model.opset_import[:]
    problems = find_problems(model, run_checker=False)
    assert [p.what for p in problems] == ["imports no default-domain (ai.onnx) opset"]


def test_declared_dims_in_value_info_and_negative_dims_are_checked() -> None:
    model = tiny_model()
    model.graph.value_info.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch", -2]))

    [problem] = find_problems(model, run_checker=False)

    assert problem.where == "value_info 's'"
    assert "declares dim -2 in shape ['batch', -2]" in problem.what


def test_a_non_tensor_input_is_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["seq"], ["n"], name="len")],
        "seq",
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    [problem] = find_problems(model)

    assert problem.where == "input 'seq'"
    assert "is a sequence_type, not a tensor" in problem.what


def test_an_input_without_a_shape_is_refused() -> None:
    model = tiny_model()
    model.graph.input[0].type.tensor_type.ClearField("shape")

    problems = find_problems(model, run_checker=False)

    assert [(p.where, p.what) for p in problems] == [("input 'x'", "declares no shape (its rank is unknown)")]


@dataclass
class RecordingOpSupport:
    """Records what it was asked; refuses nothing."""

    asked: list[tuple[str, str, int]] = field(default_factory=list)

    def unsupported(self, domain: str, op_type: str, opset: int) -> str | None:
        self.asked.append((domain, op_type, opset))
        return None


def test_op_support_sees_normalised_domains_subgraphs_and_function_bodies_once() -> None:
    then_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["t"], name="neg")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["batch", 3])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["e"], name="abs")],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["batch", 3])],
    )
    function = helper.make_function(
        "custom",
        "Double",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    model = tiny_model(
        nodes=[
            helper.make_node(
                "Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])
            ),
            helper.make_node("If", ["c"], ["i"], name="if", then_branch=then_graph, else_branch=else_graph),
            helper.make_node("Double", ["i"], ["d"], name="double", domain="custom"),
            helper.make_node("Add", ["d", "w"], ["y"], name="add", domain="ai.onnx"),
        ]
    )
    model.opset_import.append(helper.make_opsetid("custom", 1))
    model.functions.append(function)
    recorder = RecordingOpSupport()

    assert find_problems(model, op_support=recorder, run_checker=False) == []

    assert sorted(recorder.asked) == [
        ("", "Abs", 17),
        ("", "Add", 17),
        ("", "Constant", 17),
        ("", "If", 17),
        ("", "Neg", 17),
    ]


def test_unsupported_ops_inside_a_subgraph_are_found() -> None:
    body = helper.make_graph(
        [helper.make_node("Erf", ["x"], ["t"], name="erf_in_branch")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["batch", 3])],
    )
    model = tiny_model(
        nodes=[
            helper.make_node(
                "Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])
            ),
            helper.make_node("If", ["c"], ["y"], name="if", then_branch=body, else_branch=body),
        ]
    )
    model.graph.initializer.pop()

    [problem] = find_problems(model, op_support=FakeOpSupport(frozenset({"Erf"})))

    assert problem.where == "node 'erf_in_branch' (Erf) and 1 more node(s) like it"


def test_an_ir_version_newer_than_the_runtime_reads_is_refused_with_the_fix() -> None:
    model = tiny_model()
    model.ir_version = 14
    assert find_problems(model, limits=ModelLimits(max_ir_version=14)) == []
    assert find_problems(model) == []  # no limit given: any IR version

    problems = find_problems(model, limits=ModelLimits(max_ir_version=13))

    assert [p.where for p in problems] == ["ir_version"]
    assert "IR version 14 is newer than the 13" in problems[0].what
    assert "model.ir_version = 13" in problems[0].fix


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_file_bytes": 0},
        {"max_dim_elements": -1},
        {"min_opset": 18, "max_opset": 17},
        {"min_opset": 0},
        {"max_ir_version": 0},
    ],
)
def test_model_limits_refuse_nonsense(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError) as caught:
        ModelLimits(**kwargs)
    assert "seen:" in str(caught.value)


def test_checker_messages_without_a_node_fall_back_to_the_graph() -> None:
    model = tiny_model()
    model.ir_version = 0  # the checker requires ir_version

    problems = find_problems(model)

    assert any(p.where == "graph" and "ONNX checker" in p.what for p in problems), problems
    onnx.checker.check_model(tiny_model())  # the unmodified model is fine


def test_the_checker_reads_the_bytes_it_is_given_instead_of_serializing_the_model() -> None:
    broken = tiny_model()
    broken.graph.node[0].op_type = "NoSuchOp"

    problems = find_problems(tiny_model(), serialized=broken.SerializeToString())

    assert any("NoSuchOp" in str(p) for p in problems)
    assert find_problems(tiny_model(), serialized=tiny_model().SerializeToString()) == []
