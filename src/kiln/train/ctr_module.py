"""A PyTorch module that mirrors the ``ctr`` ONNX graph (:mod:`kiln.examples.ctr`) weight for weight.

The module is built *from* the ONNX model: every trainable initializer (``bottom.i``, ``emb.t``,
``top.i``, ``head`` weights and biases) becomes a parameter of the same shape, and
:func:`export_weights` writes the trained values back into a copy of the same graph, so the new
model has the same structure hash and the engine cache takes its refit path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from kiln.errors import ModelError, describe
from kiln.types import Array

_TRAINABLE = re.compile(r"(bottom|top)\.\d+\.(weight|bias)|emb\.\d+\.weight|head\.(weight|bias)")


def trainable_initializers(model: onnx.ModelProto) -> dict[str, Array]:
    """The ``ctr`` graph's trainable initializers (name → float32 array)."""
    found = {
        init.name: numpy_helper.to_array(init)
        for init in model.graph.initializer
        if _TRAINABLE.fullmatch(init.name)
    }
    if "head.weight" not in found or "emb.0.weight" not in found or "bottom.0.weight" not in found:
        raise ModelError(
            describe(
                "not a ctr model: its initializers lack bottom.0/emb.0/head weights",
                seen=sorted(found)[:8],
                fix="train a model made by kiln.examples (ctr)",
            )
        )
    return found


def _count(names: Mapping[str, Array], prefix: str) -> int:
    return sum(1 for name in names if re.fullmatch(rf"{prefix}\.\d+\.weight", name))


class CtrModule(torch.nn.Module):
    """``dense`` [B, 13] float32 and ``sparse`` [B, 26] int64 → click logits [B]."""

    def __init__(self, weights: Mapping[str, Array]) -> None:
        super().__init__()
        self.names = sorted(weights)
        self.params = torch.nn.ParameterDict(
            {
                name.replace(".", "_"): torch.nn.Parameter(torch.tensor(np.array(weights[name], np.float32)))
                for name in self.names
            }
        )
        self.num_bottom = _count(weights, "bottom")
        self.num_top = _count(weights, "top")
        self.num_tables = _count(weights, "emb")
        features = self.num_tables + 1
        rows, cols = np.tril_indices(features, k=-1)
        self.register_buffer(
            "pairs", torch.tensor(rows * features + cols, dtype=torch.int64), persistent=False
        )

    def weight(self, name: str) -> torch.nn.Parameter:
        param: torch.nn.Parameter = self.params[name.replace(".", "_")]
        return param

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = dense
        for i in range(self.num_bottom):
            x = torch.relu(x @ self.weight(f"bottom.{i}.weight") + self.weight(f"bottom.{i}.bias"))
        embedded = [
            torch.nn.functional.embedding(sparse[:, t], self.weight(f"emb.{t}.weight"), sparse=True)
            for t in range(self.num_tables)
        ]
        stacked = torch.stack([x, *embedded], dim=1)
        dots = torch.bmm(stacked, stacked.transpose(1, 2)).flatten(1)
        pairs: torch.Tensor = self.pairs  # type: ignore[assignment]
        x = torch.cat([x, dots[:, pairs]], dim=1)
        for i in range(self.num_top):
            x = torch.relu(x @ self.weight(f"top.{i}.weight") + self.weight(f"top.{i}.bias"))
        logits: torch.Tensor = (x @ self.weight("head.weight") + self.weight("head.bias"))[:, 0]
        return logits

    def num_rows(self) -> int:
        return int(self.weight("emb.0.weight").shape[0])

    def num_dense(self) -> int:
        return int(self.weight("bottom.0.weight").shape[0])

    def arrays(self) -> dict[str, Array]:
        """The current weights, by ONNX initializer name (float32 copies)."""
        return {
            name: self.weight(name).detach().cpu().numpy().astype(np.float32, copy=True)
            for name in self.names
        }


def export_weights(model: onnx.ModelProto, weights: Mapping[str, Array]) -> onnx.ModelProto:
    """A copy of ``model`` with the named initializers replaced (same names, shapes and dtypes)."""
    updated = onnx.ModelProto()
    updated.CopyFrom(model)
    for init in updated.graph.initializer:
        if init.name not in weights:
            continue
        value = np.ascontiguousarray(weights[init.name], dtype=np.float32)
        if tuple(value.shape) != tuple(init.dims):
            raise ModelError(
                describe(
                    f"new weights for {init.name} have another shape",
                    seen=value.shape,
                    fix=f"use {tuple(init.dims)}",
                )
            )
        init.CopyFrom(numpy_helper.from_array(value, init.name))
    return updated
