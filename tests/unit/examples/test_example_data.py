"""Example traffic: fits the models, is skewed like real traffic, is reproducible, is written safely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from kiln import examples
from kiln.errors import ConfigError
from kiln.examples import ctr, data, ranker

NAMES = list(examples.EXAMPLES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", ["tiny", "full"])
def test_samples_fit_the_model_inputs(name: str, size: str) -> None:
    spec = examples.EXAMPLES[name]
    samples = examples.make_samples(name, 3, size=size, labels=False)  # type: ignore[arg-type]
    inputs = {k: v for k, v in samples.items() if not k.startswith("_")}
    assert list(inputs) == list(spec.input_names)
    for tensor in spec.inputs(size):  # type: ignore[arg-type]
        value = inputs[tensor.name]
        assert value.dtype == tensor.dtype
        assert tensor.accepts_shape(value.shape)
        assert value.shape[0] == 3
    assert ("_key" in samples) == spec.has_keys


def test_ctr_ids_are_power_law_and_in_range() -> None:
    rows = ctr.CONFIGS["tiny"].rows
    sparse = examples.make_samples("ctr", 4096, size="tiny", labels=False)["sparse"]
    assert sparse.min() >= 0
    assert sparse.max() < rows
    shares = [data.top_share(sparse[:, t], rows, 0.01) for t in range(sparse.shape[1])]
    assert min(shares) > 0.2  # the top 1 % of ids take far more than 1 % of the traffic
    assert np.median(shares) > 0.35


def test_ctr_dense_features_are_heavy_tailed() -> None:
    dense = examples.make_samples("ctr", 4096, size="tiny", labels=False)["dense"]
    kurtosis = [data.excess_kurtosis(dense[:, f]) for f in range(dense.shape[1])]
    assert np.median(kurtosis) > 5
    assert min(kurtosis) > 1  # every feature has heavier tails than a normal distribution
    assert np.isfinite(dense).all()


def test_ctr_segments_include_rare_ones_that_behave_differently() -> None:
    samples = examples.make_samples("ctr", 8192, size="tiny", labels=False)
    key = samples["_key"]
    share = np.bincount(key, minlength=len(ctr.SEGMENT_PROBABILITIES)) / len(key)
    assert share.min() < 0.02
    assert share.max() > 0.25
    counts = samples["dense"][:, 0]
    rare, common = key == len(share) - 1, key == 0
    assert np.median(counts[rare]) > np.median(counts[common])


def test_ctr_labels_follow_the_model_probability() -> None:
    samples = examples.make_samples("ctr", 4096, size="tiny")
    model = examples.make_model("ctr", size="tiny")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    prob = session.run(None, {"dense": samples["dense"], "sparse": samples["sparse"]})[0].ravel()
    label = samples["_label"]
    assert set(np.unique(label).tolist()) == {0, 1}
    assert abs(label.mean() - prob.mean()) < 0.03
    # AUC of the model's own probabilities against the labels: clearly better than chance.
    positives, negatives = prob[label == 1], prob[label == 0]
    auc = (positives[:, None] > negatives[None, :]).mean()
    assert auc > 0.65


def test_cnn_images_are_smooth_and_normalised() -> None:
    image = examples.make_samples("cnn", 16, size="tiny")["image"]
    assert image.min() > -2.2  # ImageNet-normalised pixels in [0, 1]
    assert image.max() < 2.7
    assert abs(float(image.mean())) < 0.7
    a, b = image[..., :-1].ravel(), image[..., 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.8  # neighbouring pixels agree: not white noise


def test_ranker_tokens_are_zipf_with_variable_masked_lengths() -> None:
    cfg = ranker.CONFIGS["tiny"]
    samples = examples.make_samples("ranker", 512, size="tiny")
    ids, mask = samples["input_ids"], samples["attention_mask"]
    lengths = mask.sum(axis=1)
    assert len(np.unique(lengths)) > 5
    assert lengths.min() >= 3
    assert lengths.max() == cfg.sequence
    assert ((mask == 0) == (ids == cfg.pad_id)).all()
    assert (ids[:, 0] == cfg.cls_id).all()
    assert (ids[np.arange(len(ids)), lengths - 1] == cfg.sep_id).all()
    assert (mask[:, :-1] >= mask[:, 1:]).all()  # real tokens first, then padding
    words = ids[(mask == 1) & (ids >= cfg.first_word_id)]
    assert data.top_share(words, cfg.vocab, 0.01) > 0.25


def test_full_ranker_vocabulary_is_skewed() -> None:
    cfg = ranker.CONFIGS["full"]
    samples = examples.make_samples("ranker", 256, size="full")
    words = samples["input_ids"][samples["attention_mask"] == 1]
    assert data.top_share(words, cfg.vocab, 0.01) > 0.4
    assert samples["input_ids"].max() < cfg.vocab


@pytest.mark.parametrize("name", NAMES)
def test_validation_and_calibration_differ(name: str) -> None:
    cal = examples.make_samples(name, 4, size="tiny", kind="calibration", labels=False)
    val = examples.make_samples(name, 4, size="tiny", kind="validation", labels=False)
    first = examples.EXAMPLES[name].input_names[0]
    assert not np.array_equal(cal[first], val[first])


@pytest.mark.parametrize("name", NAMES)
def test_a_sample_does_not_depend_on_the_count(name: str) -> None:
    small = examples.make_samples(name, 5, size="tiny", seed=2)
    large = examples.make_samples(name, 300, size="tiny", seed=2)
    assert small.keys() == large.keys()
    for key, value in small.items():
        np.testing.assert_array_equal(value, large[key][:5])


def test_written_files_hold_the_same_samples_whatever_the_file_size(tmp_path: Path) -> None:
    one = examples.write_samples("ctr", tmp_path / "one", count=50, size="tiny", per_file=7)
    other = examples.write_samples("ctr", tmp_path / "other", count=50, size="tiny", per_file=50)
    names = sorted(p.name for p in one.iterdir())
    assert names == [f"part-{i:05d}.npz" for i in range(8)]
    assert [p.name for p in other.iterdir()] == ["part-00000.npz"]

    def load(folder: Path) -> dict[str, np.ndarray]:
        parts = [np.load(p, allow_pickle=False) for p in sorted(folder.glob("*.npz"))]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files}

    a, b = load(one), load(other)
    assert sorted(a) == ["_key", "_label", "dense", "sparse"]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert len(a["dense"]) == 50


def test_rewriting_a_sample_folder_replaces_it(tmp_path: Path) -> None:
    folder = examples.write_samples("ranker", tmp_path / "set", count=300, size="tiny", per_file=100)
    examples.write_samples("ranker", folder, count=10, size="tiny")
    assert [p.name for p in folder.iterdir()] == ["part-00000.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folders left


def test_a_folder_with_other_files_is_refused_untouched(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"notes\.txt"):
        examples.write_samples("ctr", tmp_path, count=10, size="tiny")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "at least 1"),
        ({"count": 5, "per_file": 0}, "per_file"),
        ({"count": 5, "kind": "training"}, "unknown sample kind"),
        ({"count": 5, "size": "medium"}, "unknown example size"),
    ],
)
def test_bad_sample_arguments_are_refused(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        examples.write_samples("ctr", tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_labels_can_be_asked_for_only_where_the_example_has_them() -> None:
    assert {n: s.can_label for n, s in examples.EXAMPLES.items()} == {
        "ctr": True,
        "cnn": True,
        "ranker": False,
    }
    with pytest.raises(ConfigError, match="no labels"):
        examples.make_samples("ranker", 4, size="tiny", labels=True)
    image = examples.make_samples("cnn", 4, size="tiny", labels=True)
    assert image["_label"].dtype == np.int64
    assert "_label" not in examples.make_samples("ctr", 4, size="tiny", labels=False)
