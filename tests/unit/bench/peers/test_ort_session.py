"""The peers' and the baseline's ONNX Runtime session opens a model saved with every tensor as
external data (ONNX Runtime alone, given the path, fails on its shape inputs) and keeps kiln's
external-data rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from kiln.bench.peers.ort import create_session, run_session
from kiln.errors import ModelError
from kiln.examples import EXAMPLES, make_model, make_samples


def _save(model: onnx.ModelProto, path: Path, *, external: bool) -> Path:
    path.parent.mkdir(parents=True)
    if external:
        onnx.save_model(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
            location="model.onnx.data", size_threshold=0,
        )  # fmt: skip
    else:
        onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_model_with_every_tensor_external_runs_like_the_inline_one(tmp_path: Path, name: str) -> None:
    inline = _save(make_model(name, size="tiny"), tmp_path / "inline" / "model.onnx", external=False)
    external = _save(make_model(name, size="tiny"), tmp_path / "external" / "model.onnx", external=True)
    samples = make_samples(name, 4, size="tiny")
    feeds = {key: value for key, value in samples.items() if not key.startswith("_")}

    got = run_session(create_session(external, optimized=False), feeds)
    want = run_session(create_session(inline, optimized=False), feeds)

    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    path = _save(make_model("ctr", size="tiny"), tmp_path / "m" / "model.onnx", external=True)
    (path.parent / "model.onnx.data").rename(tmp_path / "model.onnx.data")
    (path.parent / "model.onnx.data").symlink_to(tmp_path / "model.onnx.data")

    with pytest.raises(ModelError) as caught:
        create_session(path, optimized=True)

    assert "outside the model's folder" in caught.value.problems[0].what
