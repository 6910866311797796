"""BERT (transformers config, random init): eager fp32 / fp16 / bf16 baselines and the kiln bf16
engine built from a torch.export program (.pt2)."""

from __future__ import annotations

from typing import Any

import _kiln
import torch
from _models import bert, bert_inputs, export_program
from _stages import Context
from _timing import iterations, time_device, to_numpy

from kiln.compile.backends.torch import TorchBackend
from kiln.compile.backends.torch.exported import load_exported
from kiln.compile.spec import BuildSpec

PLANS: dict[str, dict[str, Any]] = {
    "bert-large": {"seq": 384, "batches": (1, 8, 32, 64, 128), "smoke": ("bert-tiny", 64, (1, 4))},
    "bert-base": {"seq": 128, "batches": (1, 8, 32, 128), "smoke": ("bert-tiny", 32, (1, 4))},
}


def _eager(ctx: Context, name: str, variant: str, module: torch.nn.Module, *, seq: int, batches: Any) -> None:
    for batch in batches:
        ids, mask = bert_inputs(batch, seq, ctx.device, seed=batch)
        warmup, iters = iterations(batch, ctx.smoke)
        with torch.no_grad():
            timing = time_device(lambda i=ids, m=mask: module(i, m), batch, warmup=warmup, iters=iters)
        ctx.record(
            "timing", model=name, variant=variant, scope="eager (device time per call)", **timing.to_json()
        )


def run(ctx: Context, name: str) -> None:
    plan = PLANS[name]
    size, seq, batches = plan["smoke"] if ctx.smoke else (name, plan["seq"], plan["batches"])
    model = bert(size, 0, ctx.device)
    ctx.record("model", model=name, config=size, seq=seq, params=sum(p.numel() for p in model.parameters()))
    ids, mask = bert_inputs(16 if not ctx.smoke else 4, seq, ctx.device, seed=11)
    with torch.no_grad():
        reference = to_numpy(model(ids, mask)[0])
    _eager(ctx, name, "eager fp32", model, seq=seq, batches=batches)
    for dtype, label in ((torch.float16, "eager fp16"), (torch.bfloat16, "eager bf16")):
        low = bert(size, 0, ctx.device).to(dtype)
        with torch.no_grad():
            _kiln.check(ctx.record, name, f"{label} vs fp32", to_numpy(low(ids, mask)[0]), reference)
        _eager(ctx, name, label, low, seq=seq, batches=batches)
        del low
    path = export_program(model, ctx.work / f"{name}.pt2", bert_inputs(2, seq, ctx.device), max(batches))
    del model
    if ctx.device == "cuda":
        torch.cuda.empty_cache()
    feeds = {"input_ids": ids.cpu().numpy(), "attention_mask": mask.cpu().numpy()}
    _engine(ctx, name, path, seq=seq, batches=batches, feeds=feeds, reference=reference)


def _engine(
    ctx: Context, name: str, path: Any, *, seq: int, batches: Any, feeds: dict[str, Any], reference: Any
) -> None:
    backend = TorchBackend()
    source = load_exported(path)
    options = (("buckets", ",".join(str(b) for b in batches)), *ctx.extra_options)
    spec = BuildSpec(precision="bf16", max_batch_size=max(batches), backend="torch", backend_options=options)
    artifact = _kiln.build(
        ctx.record, name, backend, source=source, spec=spec, folder=ctx.work / f"engine-{name}"
    )
    engine = _kiln.load(ctx.record, name, backend, artifact, "after build (the build's compiled module)")
    inst = _kiln.instance(ctx.record, name, engine, "first instance (captures one CUDA graph per bucket)")
    got = _kiln.run_chunks(inst, feeds, min(8, max(batches)))
    _kiln.check(
        ctx.record,
        name,
        "kiln bf16 engine vs fp32 (last hidden state)",
        got[source.outputs[0].name],
        reference,
    )

    def feed_for(batch: int) -> dict[str, Any]:
        ids, mask = bert_inputs(batch, seq, "cpu", seed=batch + 100)
        return {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}

    _kiln.time_engine(ctx.record, name, inst, feeds_for=feed_for, batches=batches, smoke=ctx.smoke)
    inst.close()
    engine.close()
    backend.standby.clear()


def autotune(ctx: Context) -> None:
    """The BERT-large engine compiled with ``compile=max-autotune`` (Inductor benchmarks Triton
    matmul templates against cuBLAS) at one batch size."""
    one_bucket(ctx, "bert-large-autotune", (("compile", "max-autotune"),))


def tuned(ctx: Context) -> None:
    """The BERT-large engine with cuDNN attention, without and with coordinate-descent tuning,
    at batch 64."""
    one_bucket(ctx, "bert-large-cudnn-attention", (("attention", "cudnn"),))
    one_bucket(
        ctx,
        "bert-large-cudnn-attention-cd",
        (("attention", "cudnn"), ("tuning", "coordinate-descent")),
    )


def one_bucket(ctx: Context, name: str, options: tuple[tuple[str, str], ...]) -> None:
    size, seq, batches = "bert-large", 384, (64,)
    if ctx.smoke:
        size, seq, batches = "bert-tiny", 64, (4,)
    model = bert(size, 0, ctx.device)
    ids, mask = bert_inputs(8 if not ctx.smoke else 4, seq, ctx.device, seed=11)
    with torch.no_grad():
        reference = to_numpy(model(ids, mask)[0])
    path = export_program(model, ctx.work / f"{name}.pt2", bert_inputs(2, seq, ctx.device), max(batches))
    del model
    saved = ctx.extra_options
    ctx.extra_options = (*options, *saved)
    feeds = {"input_ids": ids.cpu().numpy(), "attention_mask": mask.cpu().numpy()}
    try:
        _engine(ctx, name, path, seq=seq, batches=batches, feeds=feeds, reference=reference)
    finally:
        ctx.extra_options = saved
