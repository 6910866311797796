"""What a gate checks and how: :class:`GateConfig`, validated where it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from kiln.compile.spec import PRECISIONS, TASKS, Precision, Task
from kiln.errors import ConfigError, describe


@dataclass(frozen=True)
class GateThresholds:
    """The bars a candidate must clear; ``None`` skips that check.

    Attributes:
        max_accuracy_drop: accuracy drop against the fp32 reference (the task's metric: AUC for
            ctr, top-1 agreement for classifier, Spearman for ranker, relative L2 for none).
        max_drop_vs_served: accuracy drop against the served version's outputs on the same samples.
        max_p99_ms: p99 latency at ``load_rate_per_s`` (open loop, Poisson arrivals).
        min_speedup: kiln's throughput ÷ the unoptimized baseline's, both at p99 ≤ ``speedup_p99_ms``.
        max_build_s: wall seconds of the build (a cache hit counts its verification only).
    """

    max_accuracy_drop: float | None = None
    max_drop_vs_served: float | None = None
    max_p99_ms: float | None = None
    min_speedup: float | None = None
    max_build_s: float | None = None

    def __post_init__(self) -> None:
        for name, value, low in (
            ("--max-accuracy-drop", self.max_accuracy_drop, 0.0),
            ("--max-drop-vs-served", self.max_drop_vs_served, -math.inf),
            ("--max-p99-ms", self.max_p99_ms, 0.0),
            ("--min-speedup", self.min_speedup, 0.0),
            ("--max-build-s", self.max_build_s, 0.0),
        ):
            if value is not None and not (math.isfinite(value) and value >= low):
                raise ConfigError(describe(f"{name} is not a usable threshold", seen=value,
                                           fix=f"give a finite number >= {low:g}"))  # fmt: skip
        for name, value in (("--max-p99-ms", self.max_p99_ms), ("--min-speedup", self.min_speedup)):
            if value is not None and value == 0:
                raise ConfigError(describe(f"{name} must be > 0", seen=value))


@dataclass(frozen=True)
class GateLoad:
    """The load the latency and speedup checks apply (in-process, on the built engine).

    Attributes:
        load_rate_per_s: open-loop arrival rate of the p99 check.
        concurrency: closed-loop steps of the speedup comparison (kiln and the baseline alike).
        speedup_p99_ms: the p99 bound both throughputs are taken at (default: ``max_p99_ms``, else 50).
        duration_s / warmup_s: measured and unmeasured seconds of each step.
        max_batch_size / max_queue_delay_us / num_instances: kiln's runtime settings.
        int_range: range of random integer inputs (high excluded) when no samples are given.
    """

    load_rate_per_s: float = 100.0
    concurrency: tuple[int, ...] = (1, 4, 16)
    speedup_p99_ms: float | None = None
    duration_s: float = 3.0
    warmup_s: float = 0.5
    max_batch_size: int = 32
    max_queue_delay_us: int = 1000
    num_instances: int = 1
    int_range: tuple[int, int] = (0, 100)

    def __post_init__(self) -> None:
        if not (self.load_rate_per_s > 0 and math.isfinite(self.load_rate_per_s)):
            raise ConfigError(describe("--load-rate must be > 0 requests/s", seen=self.load_rate_per_s))
        if not self.concurrency or min(self.concurrency) < 1:
            raise ConfigError(
                describe("--concurrency needs values >= 1", seen=self.concurrency, fix="e.g. 1,4,16")
            )
        if self.speedup_p99_ms is not None and not self.speedup_p99_ms > 0:
            raise ConfigError(describe("--speedup-p99-ms must be > 0", seen=self.speedup_p99_ms))


@dataclass(frozen=True)
class GateConfig:
    """One gate run.

    Attributes:
        model: the candidate ``.onnx`` file. name: the model's name (default: the file's stem).
        precision / task: what to build and how accuracy is judged.
        calibration / validation: sample folders (``.npz``); validation feeds the accuracy checks
            and the load (random inputs from the signature without it).
        served_url / served_model: the running KServe v2 server and its model to compare against.
        repo: a model repository whose newest version of ``name`` is the served one (when no URL),
            and where ``publish`` puts the candidate on success.
        cache_dir: the engine cache.
    """

    model: Path
    name: str = ""
    precision: Precision = "fp32"
    task: Task = "none"
    calibration: Path | None = None
    validation: Path | None = None
    served_url: str | None = None
    served_model: str | None = None
    repo: Path | None = None
    publish: bool = False
    cache_dir: Path | None = None
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    load: GateLoad = field(default_factory=GateLoad)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                describe("unknown --precision", seen=self.precision, fix=f"use {', '.join(PRECISIONS)}")
            )
        if self.task not in TASKS:
            raise ConfigError(describe("unknown --task", seen=self.task, fix=f"use {', '.join(TASKS)}"))
        if not Path(self.model).is_file():
            raise ConfigError(describe("the candidate model is not a file", seen=str(self.model),
                                       fix="give the exported .onnx file"))  # fmt: skip
        if self.publish and self.repo is None:
            raise ConfigError(describe("publishing needs a model repository", fix="give --publish REPO"))
        if self.repo is not None and not Path(self.repo).is_dir():
            fix = "create it (an empty folder is a repository without models)"
            raise ConfigError(describe("the model repository is not a folder", seen=str(self.repo), fix=fix))
        if self.thresholds.max_drop_vs_served is not None and self.served_url is None and self.repo is None:
            raise ConfigError(describe("--max-drop-vs-served needs the served model",
                                       fix="give --served-url URL or --repo REPO"))  # fmt: skip

    @property
    def model_name(self) -> str:
        return self.name or Path(self.model).stem

    @property
    def speedup_bound_ms(self) -> float:
        return self.load.speedup_p99_ms or self.thresholds.max_p99_ms or 50.0
