"""Properties of fingerprints over randomly generated small graphs.

A graph is described by a ``GraphSpec`` (a chain of steps over ``x: [batch, width]``), so each
kind of change (topology, attribute, shape, dtype, initializer name, opset) is one edit of the spec.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from kiln.model.fingerprint import fingerprint
from kiln.model.load import load_model

BINARY = ("Add", "Mul", "Sub")
UNARY = ("Relu", "Tanh", "Sigmoid", "Neg")
NUMPY_OF = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64}


@dataclass(frozen=True)
class Step:
    op: str
    alpha: float = 0.0
    flipped: bool = False

    @property
    def weighted(self) -> bool:
        return self.op in (*BINARY, "MatMul")


@dataclass(frozen=True)
class GraphSpec:
    steps: tuple[Step, ...]
    width: int
    batch: int | str
    dtype: int
    opset: int
    seed: int
    renamed: int = -1

    def weight_name(self, index: int) -> str:
        return f"w{index}" + ("_renamed" if index == self.renamed else "")


def build(spec: GraphSpec, bump: int | None = None) -> onnx.ModelProto:
    """The model for ``spec``; ``bump`` adds 1 to the first value of that step's weight."""
    rng = np.random.default_rng(spec.seed)
    nodes, inits, current = [], [], "x"
    for index, step in enumerate(spec.steps):
        out = f"t{index}"
        if step.weighted:
            shape = (spec.width, spec.width) if step.op == "MatMul" else (spec.width,)
            values = rng.standard_normal(shape).astype(NUMPY_OF[spec.dtype])
            if bump == index:
                values.flat[0] += 1
            name = spec.weight_name(index)
            inits.append(numpy_helper.from_array(values, name))
            operands = [name, current] if step.flipped else [current, name]
            nodes.append(helper.make_node(step.op, operands, [out], name=f"n{index}"))
        elif step.op == "LeakyRelu":
            nodes.append(helper.make_node("LeakyRelu", [current], [out], name=f"n{index}", alpha=step.alpha))
        else:
            nodes.append(helper.make_node(step.op, [current], [out], name=f"n{index}"))
        current = out
    nodes.append(helper.make_node("Identity", [current], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "random",
        [helper.make_tensor_value_info("x", spec.dtype, [spec.batch, spec.width])],
        [helper.make_tensor_value_info("y", spec.dtype, [spec.batch, spec.width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", spec.opset)])


weighted_steps = st.builds(Step, op=st.sampled_from((*BINARY, "MatMul"))).flatmap(
    lambda s: st.builds(Step, op=st.just(s.op), flipped=st.booleans() if s.op in BINARY else st.just(False))
)
plain_steps = st.one_of(
    st.builds(Step, op=st.sampled_from(UNARY)),
    st.builds(Step, op=st.just("LeakyRelu"), alpha=st.floats(0.01, 0.5).map(lambda a: round(a, 3))),
)


@st.composite
def graph_specs(draw: st.DrawFn) -> GraphSpec:
    """A chain holding at least one binary op, one unary op and one LeakyRelu (so every kind of
    edit applies), plus up to three more steps, in random order."""
    binary = Step(draw(st.sampled_from(BINARY)), flipped=draw(st.booleans()))
    leaky = Step("LeakyRelu", alpha=draw(st.floats(0.01, 0.5).map(lambda a: round(a, 3))))
    unary = Step(draw(st.sampled_from(UNARY)))
    rest = draw(st.lists(st.one_of(weighted_steps, plain_steps), max_size=3))
    return GraphSpec(
        steps=tuple(draw(st.permutations([binary, leaky, unary, *rest]))),
        width=draw(st.integers(1, 4)),
        batch=draw(st.sampled_from(["batch", 1, 2])),
        dtype=draw(st.sampled_from(sorted(NUMPY_OF))),
        opset=draw(st.integers(13, 21)),
        seed=draw(st.integers(0, 2**16)),
    )


def _mutations(spec: GraphSpec) -> dict[str, GraphSpec]:
    """Every structural edit applicable to ``spec``, by kind."""
    steps = list(spec.steps)
    edits = {
        "insert a node": replace(spec, steps=(*steps[:1], Step("Relu"), *steps[1:])),
        "shape": replace(spec, batch=7 if isinstance(spec.batch, str) else "n"),
        "width": replace(spec, width=spec.width + 1),
        "dtype": replace(
            spec, dtype=TensorProto.DOUBLE if spec.dtype == TensorProto.FLOAT else TensorProto.FLOAT
        ),
        "opset": replace(spec, opset=spec.opset + 1 if spec.opset < 21 else spec.opset - 1),
        "rename an initializer": replace(spec, renamed=next(i for i, s in enumerate(steps) if s.weighted)),
    }
    for i, step in enumerate(steps):
        if step.op in BINARY:
            edits["rewire operands"] = replace(
                spec, steps=(*steps[:i], replace(step, flipped=not step.flipped), *steps[i + 1 :])
            )
        if step.op == "LeakyRelu":
            edits["attribute"] = replace(
                spec, steps=(*steps[:i], replace(step, alpha=step.alpha + 0.25), *steps[i + 1 :])
            )
        if step.op in UNARY:
            other = UNARY[(UNARY.index(step.op) + 1) % len(UNARY)]
            edits["operator"] = replace(spec, steps=(*steps[:i], Step(other), *steps[i + 1 :]))
    return edits


@settings(max_examples=60, deadline=None)
@given(graph_specs(), st.data())
def test_changing_initializer_values_keeps_structure_and_changes_weights(
    spec: GraphSpec, data: st.DataObject
) -> None:
    weighted = [i for i, s in enumerate(spec.steps) if s.weighted]
    bumped = data.draw(st.sampled_from(weighted))

    before, after = fingerprint(build(spec)), fingerprint(build(spec, bump=bumped))

    assert after.structure_hash == before.structure_hash
    assert after.weights_hash != before.weights_hash


MUTATIONS = (
    "insert a node",
    "rewire operands",
    "operator",
    "attribute",
    "shape",
    "width",
    "dtype",
    "rename an initializer",
    "opset",
)


@pytest.mark.parametrize("kind", MUTATIONS)
@settings(max_examples=20, deadline=None)
@given(spec=graph_specs())
def test_any_structural_change_changes_the_structure_hash(kind: str, spec: GraphSpec) -> None:
    changed = _mutations(spec)[kind]
    assert changed != spec

    assert fingerprint(build(changed)).structure_hash != fingerprint(build(spec)).structure_hash


def test_every_kind_of_edit_is_tested() -> None:
    spec = GraphSpec((Step("Add"), Step("LeakyRelu", alpha=0.1), Step("Relu")), 2, "batch", 1, 17, 0)
    assert sorted(_mutations(spec)) == sorted(MUTATIONS)


@settings(max_examples=25, deadline=None)
@given(graph_specs(), st.booleans())
def test_save_and_load_round_trips_keep_both_hashes(spec: GraphSpec, one_file: bool) -> None:
    model = build(spec)
    expected = fingerprint(model)
    with tempfile.TemporaryDirectory() as tmp:
        inline, external = Path(tmp, "inline.onnx"), Path(tmp, "ext", "model.onnx")
        external.parent.mkdir()
        onnx.save_model(model, str(inline))
        onnx.save_model(
            copy.deepcopy(model),  # saving as external data rewrites the model it is given
            str(external),
            save_as_external_data=True,
            all_tensors_to_one_file=one_file,
            location="weights.bin",
            size_threshold=0,
        )

        assert fingerprint(onnx.load(str(inline))) == expected
        assert fingerprint(onnx.load(str(external))) == expected
        assert load_model(inline).fingerprint == expected
        assert load_model(external).fingerprint == expected
