"""Writing an engine artifact's ``manifest.json``: checksums of the files a build wrote, plus who,
what and for which target. The engine cache uses it for its entries; tests and examples use it to
turn a build folder into a loadable ``EngineArtifact`` without a cache.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.compile.backends.base import MANIFEST_NAME, BuildOutput, EngineArtifact, FileEntry, Manifest, Target
from kiln.errors import BuildError, describe

if TYPE_CHECKING:
    from kiln.compile.spec import BuildSpec
    from kiln.model.source import ModelSource

_CHUNK_BYTES = 1 << 20


def checksum_file(path: Path) -> FileEntry:
    """SHA-256 and size of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(sha256=digest.hexdigest(), size_bytes=size)


def checksum_files(folder: Path, names: Iterable[str]) -> dict[str, FileEntry]:
    """Checksums of ``names`` (paths relative to ``folder``). ``BuildError`` for a missing file or
    a name that leaves the folder."""
    entries: dict[str, FileEntry] = {}
    root = folder.resolve()
    for name in names:
        path = (folder / name).resolve()
        if not path.is_relative_to(root):
            raise BuildError(describe("artifact file lies outside the artifact folder", seen=name))
        if not path.is_file():
            raise BuildError(describe("artifact file is missing", seen=name, fix="check the build output"))
        entries[name] = checksum_file(path)
    return entries


def write_manifest(
    out_dir: Path,
    *,
    key: str,
    source: ModelSource,
    spec: BuildSpec,
    target: Target,
    output: BuildOutput,
    build_seconds: float,
    accuracy: Mapping[str, object] | None = None,
    created_at: float | None = None,
) -> EngineArtifact:
    """Checksum ``output.files``, write ``out_dir/manifest.json`` atomically (temp file + rename)
    and return the artifact. ``created_at`` defaults to the wall clock (seconds since the epoch)."""
    manifest = Manifest(
        key=key,
        backend=target.backend,
        engine_file=output.engine_file,
        fingerprint=source.fingerprint.to_json(),
        spec=spec.to_json(),
        target=target.to_json(),
        inputs=source.inputs,
        outputs=source.outputs,
        files=checksum_files(out_dir, output.files),
        build_path=output.build_path,
        build_seconds=build_seconds,
        created_at=time.time() if created_at is None else created_at,
        accuracy=dict(accuracy) if accuracy is not None else None,
        calibration_file=output.calibration_file,
        extra=dict(output.extra),
    )
    temp = out_dir / f".{MANIFEST_NAME}.tmp"
    temp.write_text(manifest.dumps())
    os.replace(temp, out_dir / MANIFEST_NAME)
    return EngineArtifact(out_dir, manifest)
