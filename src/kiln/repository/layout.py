"""The names of a model repository, and what each one means.

```
repo/
  ctr/                      a model (any folder name not ignored below)
    config.yaml             optional: how to build and serve it (kiln.repository.config)
    calibration/ ...        anything else that is not a version folder: ignored by the scan
    1/                      a version: a positive integer without leading zeros
      model.onnx            required
      READY                 optional marker: "this version is complete"
      ...                   anything the model needs (external data files)
    .2.tmp/  2.partial/     ignored: a writer's temporary folder (renamed to "2" when complete)
```
"""

from __future__ import annotations

import re
from typing import Literal, TypeAlias

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.onnx"
MARKER_FILE = "READY"
STATE_DIR = ".kiln"
"""Where ``kiln serve`` keeps its state inside the repository (the usage ledger); ignored by the scan."""

TEMP_SUFFIXES = (".tmp", ".temp", ".partial", ".part", ".incomplete", "~")
"""Names ending like this are a writer's work in progress and never looked at."""

_VERSION = re.compile(r"[1-9][0-9]{0,17}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

EntryKind: TypeAlias = Literal["version", "temporary", "other"]


def is_temporary(name: str) -> bool:
    """Hidden (``.name``) or ending like a temporary file (``.tmp``, ``.partial``...)."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES)


def is_version_name(name: str) -> bool:
    """A positive integer written without leading zeros (``1``, ``42``), as Triton's versions."""
    return _VERSION.fullmatch(name) is not None


def is_model_name(name: str) -> bool:
    """Letters, digits, ``_``, ``-`` and ``.``, starting with a letter or digit (it goes into URLs)."""
    return _MODEL.fullmatch(name) is not None and not is_temporary(name)


def classify(name: str) -> EntryKind:
    """What a folder inside a model folder is: a version, a writer's temporary folder, or other."""
    if is_temporary(name):
        return "temporary"
    return "version" if is_version_name(name) else "other"


def version_order(version: str) -> int:
    """Sort key of a version name (numeric, not lexical: 10 comes after 9)."""
    return int(version)
