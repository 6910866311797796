"""What every benchmark stage gets: where to write, how big to run, the device, fresh caches."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _record import Recorder


@dataclass
class Context:
    out: Path
    work: Path
    stage: str
    smoke: bool
    device: str
    script: str
    extra_options: tuple[tuple[str, str], ...] = ()
    sub_timeout_s: float = 240.0
    record: Recorder = field(init=False)

    def __post_init__(self) -> None:
        self.record = Recorder(self.out, self.stage)

    def log(self, text: str) -> None:
        with (self.out / "log.txt").open("a") as handle:
            handle.write(text)

    def fresh_env(self, tag: str) -> dict[str, str]:
        return fresh_env(self.work, tag)

    def warm_load(self, model: str, artifact_path: Path) -> None:
        """Load ``artifact_path`` in a fresh process with empty compile caches (a restart)."""
        command = [
            sys.executable,
            self.script,
            "--stage",
            "warm-load",
            "--artifact",
            str(artifact_path),
            "--out",
            str(self.out),
        ]
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                env=self.fresh_env("warm"),
                capture_output=True,
                text=True,
                timeout=self.sub_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            self.record(
                "warm-load-process",
                model=model,
                rc="timeout",
                seconds=round(time.perf_counter() - started, 2),
            )
            self.log(f"--- warm-load {model} timed out\n{exc.stdout or ''}{exc.stderr or ''}\n")
            return
        self.record(
            "warm-load-process",
            model=model,
            rc=done.returncode,
            seconds=round(time.perf_counter() - started, 2),
        )
        self.log(f"--- warm-load {model} rc={done.returncode}\n{done.stdout}{done.stderr}\n")


def fresh_env(work: Path, tag: str) -> dict[str, str]:
    """The environment with empty Inductor and Triton caches (a cold compile, or a restart)."""
    root = Path(tempfile.mkdtemp(prefix=f"caches-{tag}-", dir=work))
    env = dict(os.environ)
    env["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
    env["TRITON_CACHE_DIR"] = str(root / "triton")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def warm_load_stage(ctx: Context, artifact_path: Path) -> None:
    """Stage ``warm-load``: load the artifact here (a fresh process) and create one instance."""
    import _kiln

    from kiln.compile.backends.base import EngineArtifact
    from kiln.compile.backends.torch import TorchBackend

    artifact = EngineArtifact.read(artifact_path)
    model = artifact.manifest.key.removeprefix("bench-")
    backend = TorchBackend(max_standby_per_key=0)
    engine = _kiln.load(
        ctx.record, model, backend, artifact, "fresh process: compile from the artifact's cache"
    )
    inst = _kiln.instance(ctx.record, model, engine, "first instance after the warm load")
    inst.close()
    engine.close()
