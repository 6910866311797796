"""kiln GPU benchmark: build, check (accuracy vs fp32 eager) and time every variant on one GPU.

    PYTHONPATH=src python benchmarks/gpu/run.py --out DIR [--smoke] [--only STAGE,...] [--e2e]
        [--option NAME=VALUE ...] [--scale-timeouts X]

Stages, each in its own process under its own time limit (a slow compile cannot take the others
with it), each appending its results to ``DIR/results.jsonl`` as they are measured:

* ``env``: GPU, driver, versions, kiln's target for this machine;
* ``aoti``: whether an AOTInductor CUDA package loads here, and why not;
  ``aoti-dynamic-libstdcxx``: the same, compiled without Inductor's static libstdc++;
  ``aoti-abi``: the libstdc++ cause in isolation (a ``std::regex`` per link option);
* ``resnet50``: eager fp32, eager fp16, kiln fp16 engine (ONNX source), refit, warm load;
* ``resnet50-fused``: the same with ``compile=eager`` and ``conv_fusion=cudnn`` (cuDNN fused kernels);
* ``resnet50-1x1mm``: the kiln engine built with ``conv_1x1_as_mm=on``, batches 128 and 256;
* ``resnet50-tuning`` / ``bert-large-tuning``: experiments outside kiln (see ``_stage_tuning``);
* ``bert-large`` (seq 384) and ``bert-base`` (seq 128): eager fp32/fp16/bf16, kiln bf16 (.pt2 source);
* ``bert-large-autotune``: the BERT-large engine compiled with ``compile=max-autotune``, batch 64;
* ``bert-large-tuned``: BERT-large with ``attention=cudnn``, with and without coordinate descent;
* ``ctr``: the DLRM-style example model, eager fp32 and kiln fp32 (ONNX source);
* ``runtime``: the example CNN (fp16 engine) served by ``kiln.runtime`` in this process under
  open-loop load, dynamic batching against one request per run at p99 bounds of 5 and 10 ms,
  1 and 2 instances; ``runtime-swaps``: hot swaps (weight refits every 2 s) under load and one
  transient fault (see ``_stage_runtime``); ``runtime-resnet50`` and ``runtime-swaps-resnet50``:
  the same with ResNet-50;
* ``e2e`` (only with ``--e2e``): the CTR model served by ``python -m kiln serve REPO`` (a model
  repository whose ``config.yaml`` selects the torch backend; its own process), driven by
  perf_analyzer over gRPC on a grid of request sizes and concurrencies, then two weight-only hot
  swaps under load (see ``_e2e``); perf_analyzer is found on ``PATH`` or at ``KILN_PERF_ANALYZER``.

Every stage compiles with empty Inductor/Triton caches (cold). After all stages, ``DIR/table.md``
holds the tables (and is printed). ``--smoke`` runs tiny versions of everything (minutes; also on
a CPU-only machine, where CUDA-only steps are skipped). Timings are never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _record import Recorder, read_records  # noqa: E402
from _report import render  # noqa: E402
from _stages import Context, fresh_env, warm_load_stage  # noqa: E402

STAGES: dict[str, float] = {
    "env": 60,
    "aoti": 240,
    "aoti-dynamic-libstdcxx": 240,
    "resnet50": 420,
    "resnet50-fused": 300,
    "resnet50-1x1mm": 150,
    "bert-large": 420,
    "bert-base": 240,
    "bert-large-autotune": 300,
    "bert-large-tuned": 360,
    "ctr": 180,
    "e2e": 420,
    "resnet50-tuning": 360,
    "bert-large-tuning": 300,
    "aoti-abi": 150,
    "runtime": 540,
    "runtime-swaps": 420,
    "runtime-resnet50": 540,
    "runtime-swaps-resnet50": 420,
}
"""Stage -> time limit in seconds (full run; ``--smoke`` uses the same limits)."""
DEFAULT_STAGES = (
    "env",
    "resnet50",
    "resnet50-fused",
    "ctr",
    "bert-large",
    "bert-base",
    "aoti-dynamic-libstdcxx",
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-bench-out")))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--smoke", action="store_true", help="tiny versions of every stage")
    parser.add_argument("--only", default=None, help="comma-separated stages to run")
    parser.add_argument("--e2e", action="store_true", help="add the kiln serve + perf_analyzer stage")
    parser.add_argument("--option", action="append", default=[], help="extra torch backend option NAME=VALUE")
    parser.add_argument("--scale-timeouts", type=float, default=1.0)
    parser.add_argument(
        "--serve-cmd",
        default=None,
        help="e2e: the server command template ({repo}, {http_port}, {grpc_port}, {cache_dir})",
    )
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--artifact", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _options(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(o.split("=", 1)) for o in args.option)  # type: ignore[misc]


def run_stage(args: argparse.Namespace) -> None:  # noqa: PLR0915 (one branch per stage)
    """Inside a stage's own process."""
    import torch

    work = args.work or Path(tempfile.mkdtemp(prefix="kiln-gpu-bench-"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if os.environ.get("KILN_BENCH_CACHE_DEBUG"):
        import _cachedebug

        _cachedebug.install(args.out, args.stage)
    ctx = Context(
        args.out, work, args.stage, args.smoke, device, str(Path(__file__).resolve()), _options(args)
    )
    if args.stage == "env":
        import _stage_env

        _stage_env.run(ctx)
    elif args.stage in ("aoti", "aoti-dynamic-libstdcxx"):
        import _stage_aoti

        _stage_aoti.run(ctx, no_static_libstdcxx=args.stage == "aoti-dynamic-libstdcxx")
    elif args.stage == "resnet50":
        import _stage_resnet

        _stage_resnet.run(ctx)
    elif args.stage == "resnet50-fused":
        import _stage_resnet

        _stage_resnet.MODEL = "resnet50-fused"  # its records go to their own table
        ctx.extra_options = (("compile", "eager"), ("conv_fusion", "cudnn"), *ctx.extra_options)
        _stage_resnet.run(ctx)
    elif args.stage == "resnet50-1x1mm":
        import _stage_resnet

        _stage_resnet.variant(ctx)
    elif args.stage == "bert-large-autotune":
        import _stage_bert

        _stage_bert.autotune(ctx)
    elif args.stage == "bert-large-tuned":
        import _stage_bert

        _stage_bert.tuned(ctx)
    elif args.stage in ("bert-large", "bert-base"):
        import _stage_bert

        _stage_bert.run(ctx, args.stage)
    elif args.stage == "ctr":
        import _stage_ctr

        _stage_ctr.run(ctx)
    elif args.stage == "e2e":
        import _e2e

        _e2e.run(ctx, args.serve_cmd)
    elif args.stage == "aoti-abi":
        import _stage_aoti

        _stage_aoti.aoti_abi(ctx)
    elif args.stage in ("resnet50-tuning", "bert-large-tuning"):
        import _stage_tuning

        _stage_tuning.run(ctx, args.stage)
    elif args.stage.startswith("runtime"):
        import _stage_runtime

        runner = _stage_runtime.stage_runner(args.stage)
        if runner is None:
            raise SystemExit(f"unknown stage {args.stage!r}; stages: {', '.join(STAGES)}")
        runner(ctx)
    elif args.stage == "warm-load":
        warm_load_stage(ctx, args.artifact)
    else:
        raise SystemExit(f"unknown stage {args.stage!r}; stages: {', '.join(STAGES)}")


def orchestrate(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="kiln-gpu-bench-"))
    stages = args.only.split(",") if args.only else [*DEFAULT_STAGES, *(["e2e"] if args.e2e else [])]
    failed = 0
    table = ""
    for stage in stages:
        limit = STAGES.get(stage, 300) * args.scale_timeouts
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--stage",
            stage,
            "--out",
            str(args.out),
            "--work",
            str(work / stage),
        ]
        command += ["--smoke"] if args.smoke else []
        command += [f"--option={o}" for o in args.option]
        command += ["--serve-cmd", args.serve_cmd] if args.serve_cmd else []
        (work / stage).mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(f"== stage {stage} (limit {limit:.0f} s)", flush=True)
        with (args.out / "log.txt").open("a") as log:
            log.write(f"\n===== stage {stage}\n")
            log.flush()
            try:
                rc: object = subprocess.run(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=limit,
                    env=fresh_env(work, stage),
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        seconds = round(time.perf_counter() - started, 1)
        Recorder(args.out, stage)("stage", model=stage, rc=rc, seconds=seconds)
        failed += rc != 0
        table = render(read_records(args.out))
        (args.out / "table.md").write_text(table)
    print(table)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.stage:
        args.out.mkdir(parents=True, exist_ok=True)
        run_stage(args)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
