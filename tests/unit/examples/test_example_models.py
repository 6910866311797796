"""The example graphs: valid, runnable at any batch size, sane outputs, reproducible bytes."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kiln import examples
from kiln.errors import ConfigError
from kiln.examples import cnn
from kiln.types import numpy_dtype

NAMES = list(examples.EXAMPLES)


@pytest.fixture(scope="module")
def tiny() -> dict[str, onnx.ModelProto]:
    return {name: examples.make_model(name, size="tiny") for name in NAMES}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(name: str, model: onnx.ModelProto, count: int) -> np.ndarray:
    samples = examples.make_samples(name, count, size="tiny", kind="validation", labels=False)
    feeds = {k: v for k, v in samples.items() if not k.startswith("_")}
    return _session(model).run(None, feeds)[0]


def structure_hash(model: onnx.ModelProto) -> str:
    """SHA-256 of the model with every initializer's values removed (names, dtypes, dims kept)."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    for tensor in skeleton.graph.initializer:
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
            tensor.ClearField(field)
    return hashlib.sha256(skeleton.SerializeToString()).hexdigest()


@pytest.mark.parametrize("name", NAMES)
def test_passes_the_full_onnx_check(name: str, tiny: dict[str, onnx.ModelProto]) -> None:
    model = tiny[name]
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert model.ir_version == 8
    kinds = {t.data_type for t in model.graph.initializer}
    assert kinds <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}  # fp32 weights, int64 shapes/indices


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_the_spec_with_a_symbolic_batch_axis(
    name: str, tiny: dict[str, onnx.ModelProto]
) -> None:
    spec = examples.EXAMPLES[name]
    graph = tiny[name].graph
    for declared, value in zip(spec.inputs("tiny"), graph.input, strict=True):
        dims = value.type.tensor_type.shape.dim
        assert value.name == declared.name
        assert dims[0].dim_param == "batch"
        assert tuple(d.dim_value for d in dims[1:]) == declared.shape[1:]
        elem = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        assert elem == numpy_dtype(declared.datatype)
    assert [o.name for o in graph.output] == list(spec.output_names)
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_spec_profiles_cover_batch_one_to_the_maximum() -> None:
    spec = examples.EXAMPLES["ctr"]
    dense, sparse = spec.profiles("full")
    assert (dense.input, dense.min, dense.opt, dense.max) == ("dense", (1, 13), (64, 13), (256, 13))
    assert (sparse.min, sparse.max) == ((1, 26), (256, 26))
    image = examples.EXAMPLES["cnn"].profiles("tiny")[0]
    assert image.max == (examples.EXAMPLES["cnn"].max_batch_size, 3, 32, 32)
    assert [s.task for s in examples.EXAMPLES.values()] == ["ctr", "classifier", "ranker"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 5])
def test_runs_at_several_batch_sizes(name: str, batch: int, tiny: dict[str, onnx.ModelProto]) -> None:
    out = _run(name, tiny[name], batch)
    spec = examples.EXAMPLES[name].outputs("tiny")[0]
    assert out.shape == (batch, *spec.shape[1:])
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_ctr_probabilities_spread_out(tiny: dict[str, onnx.ModelProto]) -> None:
    prob = _run("ctr", tiny["ctr"], 2048).ravel()
    assert ((prob > 0) & (prob < 1)).all()
    low, high = np.percentile(prob, [5, 95])
    assert low < 0.1
    assert high > 0.6
    assert prob.std() > 0.1


def test_cnn_top1_is_a_clear_winner_for_most_images(tiny: dict[str, onnx.ModelProto]) -> None:
    logits = _run("cnn", tiny["cnn"], 128)
    ordered = np.sort(logits, axis=1)
    gap = ordered[:, -1] - ordered[:, -2]
    assert np.median(gap) > 0.25
    assert np.mean(gap < 0.01) < 0.1
    assert len(set(np.argmax(logits, axis=1).tolist())) >= 3  # not one class for every image


def test_cnn_classifies_each_class_prototype_as_its_class(tiny: dict[str, onnx.ModelProto]) -> None:
    """The head is a nearest-class-mean classifier fitted on the prototypes' features; images
    blended from a prototype mostly keep its class, and the predictions are not near-ties."""
    prototypes = cnn.prototypes("tiny")
    logits = _session(tiny["cnn"]).run(None, {"image": np.asarray(prototypes)})[0]
    assert (np.argmax(logits, axis=1) == np.arange(len(prototypes))).all()
    samples = _run("cnn", tiny["cnn"], 256)
    ordered = np.sort(samples, axis=1)
    spread = np.median(samples.std(axis=1))
    assert np.median(ordered[:, -1] - ordered[:, -2]) > 0.3 * spread


def test_cnn_prototypes_do_not_depend_on_the_seed() -> None:
    first = examples.make_samples("cnn", 8, size="tiny", seed=0)["image"]
    assert not cnn.prototypes("tiny").flags.writeable
    assert np.array_equal(cnn.prototypes("tiny"), cnn.prototypes("tiny"))
    assert not np.array_equal(first, examples.make_samples("cnn", 8, size="tiny", seed=1)["image"])


def test_ranker_scores_spread_out(tiny: dict[str, onnx.ModelProto]) -> None:
    score = _run("ranker", tiny["ranker"], 256).ravel()
    assert 0.3 < score.std() < 5.0
    assert len(np.unique(score)) > 200


def test_ranker_mask_hides_padding(tiny: dict[str, onnx.ModelProto]) -> None:
    samples = examples.make_samples("ranker", 8, size="tiny")
    ids, mask = samples["input_ids"], samples["attention_mask"]
    changed = np.where(mask == 0, (ids + 7) % 1000, ids)  # other tokens where the mask is 0
    session = _session(tiny["ranker"])
    before = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    after = session.run(None, {"input_ids": changed, "attention_mask": mask})[0]
    assert (mask == 0).any()
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-5)


def test_ranker_fuses_under_onnxruntime(tiny: dict[str, onnx.ModelProto], tmp_path: Path) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(tiny["ranker"].SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = Counter(node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    layers = 4
    assert ops["BiasGelu"] == layers
    assert ops["SkipLayerNormalization"] == 2 * layers
    assert ops["FusedMatMul"] == layers
    assert ops["Erf"] == 0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_the_same_bytes(name: str, tiny: dict[str, onnx.ModelProto]) -> None:
    again = examples.make_model(name, size="tiny", seed=0)
    assert again.SerializeToString() == tiny[name].SerializeToString()


@pytest.mark.parametrize("name", NAMES)
def test_another_seed_changes_only_the_weights(name: str, tiny: dict[str, onnx.ModelProto]) -> None:
    other = examples.make_model(name, size="tiny", seed=1)
    assert structure_hash(other) == structure_hash(tiny[name])
    assert other.SerializeToString() != tiny[name].SerializeToString()
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in tiny[name].graph.initializer}
    changed = [
        t.name
        for t in other.graph.initializer
        if not np.array_equal(onnx.numpy_helper.to_array(t), weights[t.name])
    ]
    assert any(n.endswith(".weight") for n in changed)


def test_full_ctr_build_is_byte_reproducible(tmp_path: Path) -> None:
    first = examples.build_model("ctr", tmp_path / "a.onnx", size="full", seed=3)
    second = examples.build_model("ctr", tmp_path / "b.onnx", size="full", seed=3)
    assert first.read_bytes() == second.read_bytes()
    model = onnx.load(str(first))
    onnx.checker.check_model(model, full_check=True)
    tables = [t for t in model.graph.initializer if t.name.startswith("emb.") and t.name.endswith(".weight")]
    assert len(tables) == 26
    assert all(tuple(t.dims) == (10_000, 16) for t in tables)


def test_build_model_writes_atomically_and_refuses_a_folder(tmp_path: Path) -> None:
    path = examples.build_model("ranker", tmp_path / "deep" / "model.onnx", size="tiny")
    assert path.read_bytes() == examples.make_model("ranker", size="tiny").SerializeToString()
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]
    with pytest.raises(ConfigError, match="folder"):
        examples.build_model("ranker", tmp_path, size="tiny")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet"}, "unknown example model"),
        ({"name": "ctr", "size": "huge"}, "unknown example size"),
        ({"name": "ctr", "seed": -1}, "non-negative"),
    ],
)
def test_bad_arguments_name_the_value_and_the_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        examples.make_model(**kwargs)  # type: ignore[arg-type]
    assert "use one of" in str(caught.value) or "seed=0" in str(caught.value)
