"""Tuning experiments, each timed the same way (one CUDA graph of the whole forward, replayed on
device-resident inputs, device time per replay) and checked against the fp32 model:

* ``resnet50-tuning`` (batch 256, fp16/bf16 channels-last, BatchNorm folded): Inductor as kiln
  compiles it; Inductor with freezing; with coordinate-descent tuning; eager convolutions; cuDNN's
  fused convolution + bias + ReLU (and + residual + ReLU) kernels; a kernel-time breakdown.
* ``bert-large-tuning`` (seq 384, batch 64, bf16): the attention kernel per SDPA backend, alone
  and inside the compiled model; coordinate-descent tuning.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import _models
import torch
from _stages import Context
from _timing import accuracy, time_device, to_numpy
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]


def graphed(fn: Callable[..., Any], *inputs: torch.Tensor) -> Callable[[], Any]:
    """``fn`` captured in one CUDA graph on ``inputs`` (static), after three warm-up calls."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):
            fn(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        out = fn(*inputs)

    def replay() -> Any:
        graph.replay()
        return out

    return replay


def fold_bn(model: nn.Module) -> nn.Module:
    """Every Conv2d followed by its BatchNorm2d (torchvision ResNet naming) folded into one conv."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(parent: nn.Module, conv: str, bn: str) -> None:
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())

    fold(model, "conv1", "bn1")
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            for i in (1, 2, 3):
                fold(block, f"conv{i}", f"bn{i}")
            if block.downsample is not None:
                block.downsample[0] = fuse_conv_bn_eval(block.downsample[0], block.downsample[1])
                block.downsample[1] = nn.Identity()
    return model


def _cr(x: torch.Tensor, c: nn.Conv2d) -> torch.Tensor:
    return torch.ops.aten.cudnn_convolution_relu(
        x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups
    )


def _car(x: torch.Tensor, c: nn.Conv2d, z: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.cudnn_convolution_add_relu(
        x, c.weight, z, 1.0, c.bias, c.stride, c.padding, c.dilation, c.groups
    )


def cudnn_fused_forward(model: nn.Module) -> Forward:
    """ResNet-50 (BatchNorm folded) with cuDNN's fused conv+bias+ReLU and conv+bias+add+ReLU."""

    def block(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = _cr(_cr(x, b.conv1), b.conv2)
        identity = x if b.downsample is None else b.downsample[0](x)
        return _car(out, b.conv3, identity)

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = model.maxpool(_cr(x, model.conv1))
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for b in layer:
                x = block(b, x)
        return model.fc(torch.flatten(model.avgpool(x), 1))

    return forward


def _variant(ctx: Context, model: str, name: str, make: Callable[[], Callable[[], Any]], **extra: Any) -> Any:
    """Build (timed), replay-time and record one variant; returns its output (or None on failure)."""
    started = time.perf_counter()
    try:
        replay = make()
        build_s = round(time.perf_counter() - started, 2)
        out = replay()
        batch = extra.pop("batch")
        timing = time_device(replay, batch, warmup=5, iters=40)
    except Exception as exc:  # an experiment may fail; record why and go on
        ctx.record("tuning", model=model, variant=name, ok=False, error=f"{type(exc).__name__}: {exc}"[:600])
        torch.cuda.synchronize()
        return None
    ctx.record("timing", model=model, variant=name, scope="tuning: one CUDA graph", build_s=build_s,
               **timing.to_json(), **extra)  # fmt: skip
    return out


def resnet(ctx: Context) -> None:
    batch = 256
    fp32, _ = _models.resnet50(0, "cuda")
    x32 = torch.randn(batch, 3, 224, 224, device="cuda")
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        ref = to_numpy(fp32(x32))
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    folded = fold_bn(fp32)

    def check(name: str, out: Any) -> None:
        if out is not None:
            ctx.record(
                "accuracy", model="resnet50", variant=f"{name} vs fp32", **accuracy(to_numpy(out), ref)
            )

    for dtype, tag in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        model = copy.deepcopy(folded).to(dtype).to(memory_format=torch.channels_last)
        x = x32.to(dtype).contiguous(memory_format=torch.channels_last)
        name = f"cuDNN fused conv+bias+relu, eager, {tag}"
        check(
            name,
            _variant(
                ctx, "resnet50", name, lambda m=model, x=x: graphed(cudnn_fused_forward(m), x), batch=batch
            ),
        )
        if tag == "bf16":
            continue
        check("eager, BN folded, fp16", _variant(ctx, "resnet50", "eager, BN folded, fp16",
              lambda m=model, x=x: graphed(m, x), batch=batch))  # fmt: skip
        for label, settings in (
            ("inductor (as kiln), fp16", {"freezing": False}),
            ("inductor + freezing, fp16", {"freezing": True}),
            (
                "inductor + freezing + coordinate descent, fp16",
                {"freezing": True, "coordinate_descent_tuning": True},
            ),
        ):
            torch._dynamo.reset()

            def make(
                m: nn.Module = model, x: torch.Tensor = x, s: dict[str, Any] = settings
            ) -> Callable[[], Any]:
                compiled = torch.compile(m, dynamic=False, options={"triton.cudagraphs": False, **s})
                return graphed(compiled, x)

            check(label, _variant(ctx, "resnet50", label, make, batch=batch))
        breakdown(ctx, model, x)


def breakdown(ctx: Context, model: nn.Module, x: torch.Tensor) -> None:
    """Kernel time by kind for the kiln-style compiled model (no graph), three calls."""
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=False, options={"triton.cudagraphs": False, "freezing": False})
    with torch.no_grad():
        for _ in range(3):
            compiled(x)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                compiled(x)
            torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    for event in prof.key_averages():
        us = float(getattr(event, "device_time_total", 0.0) or getattr(event, "cuda_time_total", 0.0))
        name = event.key.lower()
        kind = (
            "triton"
            if "triton" in name
            else "conv/gemm"
            if any(k in name for k in ("conv", "gemm", "sm90", "xmma", "cutlass", "nhwc"))
            else "other"
        )
        kinds[kind] = kinds.get(kind, 0.0) + us / 3e3
    top = sorted(
        ((float(getattr(e, "device_time_total", 0.0)) / 3e3, e.key[:90]) for e in prof.key_averages()),
        reverse=True,
    )[:12]
    ctx.record(
        "tuning",
        model="resnet50",
        variant="kernel time per call by kind (ms), inductor as kiln",
        kinds={k: round(v, 3) for k, v in kinds.items()},
        top=[(round(a, 3), b) for a, b in top],
    )


def bert(ctx: Context) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    batch, seq = 64, 384
    q, k, v = (torch.randn(batch, 16, seq, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = torch.zeros(batch, 1, seq, seq, device="cuda", dtype=torch.bfloat16)
    mask[..., seq - 20 :] = torch.finfo(torch.bfloat16).min
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=mask.float()
    )
    backends = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "flash": SDPBackend.FLASH_ATTENTION}  # fmt: skip
    for name, backend in backends.items():

        def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, b: SDPBackend = backend) -> torch.Tensor:
            with sdpa_kernel([b]):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        label = f"SDPA alone (one layer), {name}, masked"
        out = _variant(ctx, "bert-large", label, lambda s=sdpa: graphed(s, q, k, v), batch=batch)
        if out is not None:
            ctx.record(
                "accuracy",
                model="bert-large",
                variant=f"{label} vs fp32",
                **accuracy(to_numpy(out), to_numpy(ref)),
            )
    ids, am = _models.bert_inputs(batch, seq, "cuda")
    model = torch.export.export(_models.bert("bert-large", 0, "cuda").to(torch.bfloat16), (ids, am)).module()
    fp32 = _models.bert("bert-large", 0, "cuda")
    with torch.no_grad():
        ref_h = to_numpy(fp32(ids[:8], am[:8])[0])
    del fp32
    for name, backends_on, settings in (
        ("compiled, SDPA efficient", [SDPBackend.EFFICIENT_ATTENTION], {}),
        ("compiled, SDPA cudnn", [SDPBackend.CUDNN_ATTENTION], {}),
        (
            "compiled, SDPA cudnn + coordinate descent",
            [SDPBackend.CUDNN_ATTENTION],
            {"coordinate_descent_tuning": True},
        ),
    ):
        torch._dynamo.reset()

        def make(b: list[SDPBackend] = backends_on, s: dict[str, Any] = settings) -> Callable[[], Any]:
            compiled = torch.compile(model, dynamic=False, options={"triton.cudagraphs": False, **s})
            with sdpa_kernel(b):
                return graphed(compiled, ids, am)

        out = _variant(ctx, "bert-large", f"{name}, bf16", make, batch=batch)
        if out is not None:
            ctx.record("accuracy", model="bert-large", variant=f"{name} vs fp32 (8 sequences)",
                       **accuracy(to_numpy(out[0][:8]), ref_h))  # fmt: skip


def run(ctx: Context, stage: str) -> None:
    {"resnet50-tuning": resnet, "bert-large-tuning": bert}[stage](ctx)
