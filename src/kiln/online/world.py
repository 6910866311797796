"""A synthetic click stream whose users change their minds: the ``ctr`` traffic of
:mod:`kiln.examples.ctr`, labelled by a hidden "true" model that drifts.

Before the drift the truth is the ``ctr`` example model itself (so version 1 of the served model is
exactly right). The drift shifts users' interest in the items of a few embedding tables: every item
id gets a fixed random appeal (±1), and the true logit moves by ``drift * strength * appeal`` summed
over those tables. A model that keeps learning from feedback follows; a frozen one does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import onnx

from kiln.examples import ctr, make_model
from kiln.examples._ort import Runner
from kiln.types import Array

F64 = npt.NDArray[np.float64]

DRIFT_TABLES = (0, 2, 4, 6)
"""The tables whose items' appeal drifts (even tables: their hot items depend on the user segment)."""
DRIFT_DENSE = 8
"""The dense feature (a Student-t value) whose effect on clicks drifts."""
ITEM_WEIGHT = 0.25


@dataclass
class ClickWorld:
    """The true click probability of a request at a drift level in [0, 1].

    Fields:
        size: the ``ctr`` size (``full`` or ``tiny``).
        seed: the ``ctr`` model seed (the truth before the drift, and the served version 1).
        strength: logit shift per drifting table at full drift.
    """

    size: str = "full"
    seed: int = 0
    strength: float = 1.0
    model: onnx.ModelProto = field(init=False)
    _runner: Runner = field(init=False)
    _appeal: Array = field(init=False)

    def __post_init__(self) -> None:
        self.model = make_model("ctr", size=self.size, seed=self.seed)  # type: ignore[arg-type]
        self._runner = Runner(self.model)
        rows = ctr.CONFIGS[self.size].rows
        rng = np.random.default_rng(self.seed + 7919)
        self._appeal = rng.choice([-1.0, 1.0], size=(len(DRIFT_TABLES), rows))
        reference = np.asarray(
            self.requests(np.random.default_rng(self.seed + 104729), 4096)["dense"][:, DRIFT_DENSE],
            np.float64,
        )
        q25, self._centre, q75 = (float(v) for v in np.percentile(reference, [25, 50, 75]))
        self._scale = max((q75 - q25) / 1.349, 1e-6)

    def requests(self, rng: np.random.Generator, count: int) -> dict[str, Array]:
        """``count`` requests: ``dense`` [count, 13] float32 and ``sparse`` [count, 26] int64."""
        block = ctr.sample_block(self.size, rng, count)
        return {"dense": block["dense"], "sparse": block["sparse"]}

    def click_probability(self, inputs: dict[str, Array], drift: float) -> F64:
        """The true click probability of each request at ``drift`` (0 = none, 1 = full)."""
        prob = self._runner.run(inputs)[0].reshape(-1).astype(np.float64)
        logit = np.log(np.clip(prob, 1e-7, 1.0)) - np.log(np.clip(1.0 - prob, 1e-7, 1.0))
        shift: F64 = np.asarray(self.interest(inputs), dtype=np.float64)
        result: F64 = 1.0 / (1.0 + np.exp(-(logit + drift * self.strength * shift)))
        return result

    def interest(self, inputs: dict[str, Array]) -> Array:
        """The drifting part of the logit at full drift, before ``strength``."""
        sparse = np.asarray(inputs["sparse"])
        items = sum(self._appeal[i][sparse[:, table]] for i, table in enumerate(DRIFT_TABLES))
        dense = np.asarray(inputs["dense"], dtype=np.float64)[:, DRIFT_DENSE]
        centred = np.clip((dense - self._centre) / self._scale, -3.0, 3.0)
        result: Array = np.asarray(items, dtype=np.float64) * ITEM_WEIGHT + centred
        return result

    def clicks(self, inputs: dict[str, Array], drift: float, rng: np.random.Generator) -> Array:
        """Clicks (0/1 int64) drawn from the true probabilities."""
        probability = self.click_probability(inputs, drift)
        labels: Array = (rng.random(len(probability)) < probability).astype(np.int64)
        return labels
