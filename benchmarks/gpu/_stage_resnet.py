"""ResNet-50: eager fp32 and fp16 baselines, kiln fp16 engine (build, accuracy, speed, instances),
weight refit into the standby engine, and a warm load (compile from the artifact's cache) in a
fresh process."""

from __future__ import annotations

import copy
import time
from typing import Any

import _kiln
import numpy as np
import torch
from _models import export_onnx, resnet50
from _stages import Context
from _timing import iterations, time_device, to_numpy

from kiln.compile.backends.torch import TorchBackend
from kiln.compile.spec import BuildSpec
from kiln.model.load import load_model

MODEL = "resnet50"


def _eager(
    ctx: Context,
    variant: str,
    module: torch.nn.Module,
    *,
    dtype: torch.dtype,
    channels_last: bool,
    batches: Any,
) -> None:
    for batch in batches:
        x = torch.randn(batch, 3, 224, 224, device=ctx.device, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        warmup, iters = iterations(batch, ctx.smoke)
        with torch.no_grad():
            timing = time_device(lambda x=x: module(x), batch, warmup=warmup, iters=iters)
        ctx.record(
            "timing", model=MODEL, variant=variant, scope="eager (device time per call)", **timing.to_json()
        )


def _reference(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray[Any, Any]:
    """fp32 outputs with TF32 off: the accuracy reference (precision switches restored after)."""
    from kiln.compile.backends.torch.compiler import pinned_numerics

    with pinned_numerics({"matmul": "ieee", "conv": "ieee"}), torch.no_grad():
        return to_numpy(torch.cat([model(images[i : i + 16]) for i in range(0, len(images), 16)]))


def run(ctx: Context) -> None:
    batches = (1, 8) if ctx.smoke else (1, 8, 32, 128, 256)
    count = 16 if ctx.smoke else 128
    model, origin = resnet50(0, ctx.device)
    ctx.record("model", model=MODEL, origin=origin, params=sum(p.numel() for p in model.parameters()))
    images = torch.randn(count, 3, 224, 224, generator=torch.Generator().manual_seed(7)).to(ctx.device)
    reference = _reference(model, images)
    _eager(ctx, "eager fp32", model, dtype=torch.float32, channels_last=False, batches=batches)
    half = copy.deepcopy(model).half().to(memory_format=torch.channels_last)
    with torch.no_grad():
        eager16 = to_numpy(half(images.half().contiguous(memory_format=torch.channels_last)))
    _kiln.check(ctx.record, MODEL, "eager fp16 channels-last vs fp32", eager16, reference)
    _eager(ctx, "eager fp16 channels-last", half, dtype=torch.float16, channels_last=True, batches=batches)
    del half
    onnx_v1 = export_onnx(model, ctx.work / "resnet50-v1.onnx", images[:2], "image", "logits")
    model_v2, _ = resnet50(1, ctx.device)
    reference_v2 = _reference(model_v2, images)
    onnx_v2 = export_onnx(model_v2, ctx.work / "resnet50-v2.onnx", images[:2], "image", "logits")
    del model, model_v2
    torch.cuda.empty_cache() if ctx.device == "cuda" else None
    _engine(
        ctx, batches, images, reference=reference, onnx_v1=onnx_v1, onnx_v2=onnx_v2, reference_v2=reference_v2
    )


def _engine(
    ctx: Context,
    batches: Any,
    images: torch.Tensor,
    *,
    reference: Any,
    onnx_v1: Any,
    onnx_v2: Any,
    reference_v2: Any,
) -> None:
    backend = TorchBackend()
    source = load_model(onnx_v1, op_support=backend.op_support())
    options = (("buckets", ",".join(str(b) for b in batches)), *ctx.extra_options)
    spec = BuildSpec(precision="fp16", max_batch_size=max(batches), backend="torch", backend_options=options)
    artifact = _kiln.build(
        ctx.record, MODEL, backend, source=source, spec=spec, folder=ctx.work / "engine-v1"
    )
    engine = _kiln.load(ctx.record, MODEL, backend, artifact, "after build (the build's compiled module)")
    inst = _kiln.instance(ctx.record, MODEL, engine, "first instance (captures one CUDA graph per bucket)")
    feeds = {"image": images.cpu().numpy()}
    got = _kiln.run_chunks(inst, feeds, min(32, max(batches)))["logits"]
    _kiln.check(ctx.record, MODEL, "kiln fp16 engine vs fp32", got, reference)
    rng = np.random.default_rng(3)

    def feed_for(batch: int) -> dict[str, Any]:
        return {"image": rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)}

    _kiln.time_engine(ctx.record, MODEL, inst, feeds_for=feed_for, batches=batches, smoke=ctx.smoke)
    second = _kiln.instance(ctx.record, MODEL, engine, "second instance")
    big = max(b for b in batches if b <= 128)
    _kiln.time_instances(
        ctx.record, MODEL, [inst], feed=feed_for(big), batch=big, seconds=1.0 if ctx.smoke else 3.0
    )
    _kiln.time_instances(
        ctx.record, MODEL, [inst, second], feed=feed_for(big), batch=big, seconds=1.0 if ctx.smoke else 3.0
    )
    inst.close()
    second.close()
    engine.close()
    _refit(ctx, backend, artifact, onnx_v2=onnx_v2, images=images, ref_v1=reference, ref_v2=reference_v2)
    ctx.warm_load(MODEL, artifact.path)


def _refit(
    ctx: Context,
    backend: TorchBackend,
    artifact: Any,
    *,
    onnx_v2: Any,
    images: torch.Tensor,
    ref_v1: Any,
    ref_v2: Any,
) -> None:
    from kiln.compile.artifact import write_manifest

    source = load_model(onnx_v2, op_support=backend.op_support())
    folder = ctx.work / "engine-v2"
    started = time.perf_counter()
    output = backend.refit(artifact, source, folder)
    seconds = time.perf_counter() - started
    spec = BuildSpec.from_json(artifact.manifest.spec)
    refitted = write_manifest(
        folder,
        key=artifact.manifest.key,
        source=source,
        spec=spec,
        target=backend.target(),
        output=output,
        build_seconds=seconds,
    )
    ctx.record(
        "refit",
        model=MODEL,
        what="artifact refit (new weights.pt, base compile cache)",
        seconds=round(seconds, 3),
    )
    engine = _kiln.load(
        ctx.record, MODEL, backend, refitted, "version 2 into the standby engine (weight refit)"
    )
    inst = _kiln.instance(ctx.record, MODEL, engine, "instance of version 2 (recycled runner, no capture)")
    chunk = min(
        32,
        max(int(b) for b in BuildSpec.from_json(artifact.manifest.spec).option("buckets", "32").split(",")),
    )
    got = _kiln.run_chunks(inst, {"image": images.cpu().numpy()}, chunk)["logits"]
    _kiln.check(ctx.record, MODEL, "refitted engine (v2) vs fp32 v2", got, ref_v2)
    _kiln.check(ctx.record, MODEL, "refitted engine (v2) vs fp32 v1 (must differ)", got, ref_v1)
    inst.close()
    engine.close()


def variant(ctx: Context) -> None:
    """The kiln engine built with ``conv_1x1_as_mm=on`` (1x1 convolutions as matrix products)."""
    name = "resnet50-1x1mm"
    batches = (8,) if ctx.smoke else (128, 256)
    model, _ = resnet50(0, ctx.device)
    images = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(7)).to(ctx.device)
    reference = _reference(model, images)
    onnx_v1 = export_onnx(model, ctx.work / "resnet50.onnx", images[:2], "image", "logits")
    del model
    backend = TorchBackend()
    source = load_model(onnx_v1, op_support=backend.op_support())
    options = (("buckets", ",".join(str(b) for b in batches)), ("conv_1x1_as_mm", "on"), *ctx.extra_options)
    spec = BuildSpec(precision="fp16", max_batch_size=max(batches), backend="torch", backend_options=options)
    artifact = _kiln.build(ctx.record, name, backend, source=source, spec=spec, folder=ctx.work / "engine")
    engine = _kiln.load(ctx.record, name, backend, artifact, "after build")
    inst = _kiln.instance(ctx.record, name, engine, "first instance")
    got = _kiln.run_chunks(inst, {"image": images.cpu().numpy()}, min(batches))["logits"]
    _kiln.check(ctx.record, name, "kiln fp16 engine (conv_1x1_as_mm) vs fp32", got, reference)
    rng = np.random.default_rng(3)

    def feed_for(batch: int) -> dict[str, Any]:
        return {"image": rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)}

    _kiln.time_engine(ctx.record, name, inst, feeds_for=feed_for, batches=batches, smoke=ctx.smoke)
    inst.close()
    engine.close()
