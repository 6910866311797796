"""Helpers for the end-to-end build tests: tiny examples on disk, the CLI run in-process, and
what an untouched cache looks like."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from kiln.cache.store import TEMP_DIR, EngineStore
from kiln.cli.main import app
from kiln.examples import EXAMPLES, build_model, write_samples


@dataclass(frozen=True)
class Example:
    """One tiny example on disk: seed-0 model with calibration and validation samples, and the
    seed-1 retrain (same graph, other weights) with its own validation samples."""

    name: str
    model: Path
    calibration: Path
    validation: Path
    retrained: Path
    retrained_validation: Path

    @property
    def task(self) -> str:
        return EXAMPLES[self.name].task

    def args(self, *extra: str, model: Path | None = None, validation: Path | None = None) -> list[str]:
        """``kiln build`` arguments for this example with its task, profiles and batch limit."""
        spec = EXAMPLES[self.name]
        profiles = [
            f"{p.input}:{','.join('x'.join(map(str, s)) for s in (p.min, p.opt, p.max))}"
            for p in spec.profiles("tiny")
        ]
        args = [str(model or self.model), "--task", self.task, "--max-batch-size", str(spec.max_batch_size)]
        for profile in profiles:
            args += ["--profile", profile]
        args += ["--calibration", str(self.calibration), "--validation", str(validation or self.validation)]
        return ["build", *args, *extra]


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


def kiln(args: Sequence[str]) -> Outcome:
    """Run the ``kiln`` CLI in-process."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)


def kiln_command() -> list[str]:
    """The installed ``kiln`` script, for tests that need separate processes."""
    return [str(Path(sys.executable).parent / "kiln")]


def assert_cache_untouched(cache_dir: Path) -> None:
    """No engine stored and no build left half-written (the key's empty lock file may remain)."""
    assert EngineStore(cache_dir).list_entries() == []
    temp = cache_dir / TEMP_DIR
    assert not temp.exists() or list(temp.iterdir()) == []
    if cache_dir.exists():
        assert {p.name for p in cache_dir.iterdir()} <= {TEMP_DIR, ".locks"}


def generate_example(root: Path, name: str) -> Example:
    spec = EXAMPLES[name]
    folder = root / name
    model = build_model(name, folder / f"{name}.onnx", size="tiny")
    calibration = write_samples(name, folder / "calibration", count=512, size="tiny", model=model)
    validation = write_samples(
        name, folder / "validation", count=spec.num_validation, kind="validation", size="tiny", model=model
    )
    retrained = build_model(name, folder / "retrained" / f"{name}.onnx", size="tiny", seed=1)
    retrained_validation = write_samples(
        name,
        folder / "retrained" / "validation",
        count=spec.num_validation,
        kind="validation",
        size="tiny",
        seed=1,
        model=retrained,
    )
    return Example(name, model, calibration, validation, retrained, retrained_validation)
