"""Sample sets for calibration and validation. (Contract; implementation pending.)

On disk: a folder of ``.npz`` files (or one ``.npz``). Each file holds one array per model input,
named after the input, batch on axis 0; optionally ``_label`` (one label per sample) and ``_key``
(one stratification key per sample, e.g. a user segment).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.types import Array, TensorSpec

LABEL_KEY = "_label"
STRATIFY_KEY = "_key"


@dataclass(frozen=True)
class SampleSet:
    """Samples for calibration or validation: per-input arrays with the sample index on axis 0."""

    inputs: Mapping[str, Array]
    labels: Array | None = None
    keys: Array | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[dict[str, Array]]:
        """Consecutive input batches of at most ``batch_size`` samples."""
        raise NotImplementedError

    def take(self, indices: Sequence[int] | Array) -> SampleSet:
        raise NotImplementedError


def load_samples(path: Path) -> SampleSet:
    """Read a folder of ``.npz`` files (or one file). ``ConfigError`` naming the file on a bad one,
    on an empty folder, or on files whose arrays disagree in names or non-batch shapes."""
    raise NotImplementedError


def samples_from_iterator(batches: Iterable[Mapping[str, Array]]) -> SampleSet:
    raise NotImplementedError


def check_samples(samples: SampleSet, specs: Sequence[TensorSpec], *, what: str = "calibration") -> None:
    """``ConfigError`` naming every input whose name, datatype or shape does not fit the model."""
    raise NotImplementedError


def select_samples(samples: SampleSet, count: int, *, stratify: bool = False, seed: int = 0) -> SampleSet:
    """At most ``count`` samples; with ``stratify`` (needs ``keys``), drawn evenly across key values
    so rare segments are represented."""
    raise NotImplementedError
