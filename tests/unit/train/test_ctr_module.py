from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from kiln.errors import ModelError
from kiln.examples import ctr, make_model
from kiln.model.fingerprint import fingerprint
from kiln.train.ctr_module import CtrModule, export_weights, trainable_initializers


def test_module_matches_the_onnx_graph_and_export_keeps_the_structure() -> None:
    model = make_model("ctr", size="tiny", seed=3)
    module = CtrModule(trainable_initializers(model))
    block = ctr.sample_block("tiny", np.random.default_rng(0), 64)
    feeds = {"dense": block["dense"], "sparse": block["sparse"]}
    reference = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0][:, 0]
    with torch.no_grad():
        mirrored = torch.sigmoid(
            module(torch.from_numpy(block["dense"]), torch.from_numpy(block["sparse"]))
        ).numpy()
    np.testing.assert_allclose(mirrored, reference, atol=1e-5)

    weights = module.arrays()
    weights["head.bias"] = weights["head.bias"] + 1.0
    updated = export_weights(model, weights)
    before, after = fingerprint(model), fingerprint(updated)
    assert after.structure_hash == before.structure_hash
    assert after.weights_hash != before.weights_hash
    moved = ort.InferenceSession(updated.SerializeToString()).run(None, feeds)[0][:, 0]
    assert (moved > reference).all()


def test_export_refuses_a_weight_of_another_shape() -> None:
    model = make_model("ctr", size="tiny", seed=0)
    with pytest.raises(ModelError, match=r"head\.bias"):
        export_weights(model, {"head.bias": np.zeros(3, np.float32)})


def test_a_model_that_is_not_ctr_is_refused() -> None:
    with pytest.raises(ModelError, match="not a ctr model"):
        trainable_initializers(make_model("ranker", size="tiny", seed=0))
