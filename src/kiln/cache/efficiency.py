"""An engine's efficiency factor in its ``manifest.json``: read it (1.0 when not measured), record it.

``kiln bench`` measures the factor (kiln's throughput ÷ the unoptimized baseline's at the same p99
bound) and records it here; EPU metering reads it with :func:`read_efficiency_factor`. The
manifest is not among the checksummed files, so rewriting it (temp file + ``os.replace``) keeps
the entry's checksums valid.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path

from kiln.compile.backends.base import MANIFEST_NAME, EngineArtifact, Manifest
from kiln.errors import ConfigError, describe

DEFAULT_EFFICIENCY = 1.0
"""What an engine without a measured factor counts."""


def efficiency_of(manifest: Manifest) -> float:
    """The manifest's factor; :data:`DEFAULT_EFFICIENCY` when absent or not a finite number > 0."""
    value = manifest.efficiency_factor
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    return DEFAULT_EFFICIENCY


def read_efficiency_factor(artifact: Path | EngineArtifact) -> float:
    """The efficiency factor of the engine in ``artifact`` (a folder holding ``manifest.json``);
    1.0 when it was never measured or the manifest cannot be read."""
    folder = artifact.path if isinstance(artifact, EngineArtifact) else Path(artifact)
    try:
        manifest = Manifest.from_json(json.loads((folder / MANIFEST_NAME).read_text()))
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return DEFAULT_EFFICIENCY
    return efficiency_of(manifest)


def record_efficiency_factor(artifact: Path | EngineArtifact, factor: float) -> EngineArtifact:
    """Store ``factor`` in the artifact's manifest atomically; the artifact as now on disk."""
    if not (math.isfinite(factor) and factor > 0):
        raise ConfigError(describe("an efficiency factor must be a finite number > 0", seen=factor))
    folder = artifact.path if isinstance(artifact, EngineArtifact) else Path(artifact)
    current = EngineArtifact.read(folder)
    updated = dataclasses.replace(current.manifest, efficiency_factor=float(factor))
    fd, name = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(updated.dumps())
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, folder / MANIFEST_NAME)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return EngineArtifact(folder, updated)
