"""The DLRM-style CTR model (kiln.examples ``ctr``, ONNX): eager fp32 through the converted module
(no compile) and the kiln fp32 engine; accuracy as AUC against the example's click labels."""

from __future__ import annotations

from typing import Any

import _kiln
import numpy as np
import torch
from _stages import Context
from _timing import iterations, time_device

from kiln.compile.accuracy import measure_accuracy
from kiln.compile.backends.torch import TorchBackend
from kiln.compile.backends.torch.onnx_module import ConvertOptions, convert_onnx
from kiln.compile.spec import BuildSpec
from kiln.examples import build_model, make_samples
from kiln.model.load import load_model

MODEL = "ctr"


def run(ctx: Context) -> None:
    size = "tiny" if ctx.smoke else "full"
    batches = (1, 64, 256) if ctx.smoke else (1, 64, 256, 1024, 4096)
    path = build_model(MODEL, ctx.work / "ctr.onnx", size=size)
    backend = TorchBackend()
    source = load_model(path, op_support=backend.op_support())
    samples = make_samples(MODEL, 2048 if ctx.smoke else 8192, kind="validation", size=size)
    feeds = {"dense": samples["dense"], "sparse": samples["sparse"]}
    labels = samples.get("_label")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = session.run(None, feeds)[0]
    eager = convert_onnx(source.model, ConvertOptions(device=ctx.device)).eval()
    rng = np.random.default_rng(5)

    def feed_for(batch: int) -> dict[str, Any]:
        picks = rng.integers(0, len(feeds["dense"]), batch)
        return {name: np.ascontiguousarray(value[picks]) for name, value in feeds.items()}

    for batch in batches:
        feed = feed_for(batch)
        tensors = [torch.from_numpy(feed[n]).to(ctx.device) for n in eager.input_names]
        warmup, iters = iterations(batch, ctx.smoke)
        with torch.no_grad():
            timing = time_device(lambda t=tensors: eager(*t), batch, warmup=warmup, iters=iters)
        ctx.record(
            "timing",
            model=MODEL,
            variant="eager fp32",
            scope="eager (device time per call)",
            **timing.to_json(),
        )
    options = (("buckets", ",".join(str(b) for b in batches)), *ctx.extra_options)
    spec = BuildSpec(precision="fp32", max_batch_size=max(batches), backend="torch", backend_options=options)
    artifact = _kiln.build(
        ctx.record, MODEL, backend, source=source, spec=spec, folder=ctx.work / "engine-ctr"
    )
    engine = _kiln.load(ctx.record, MODEL, backend, artifact, "after build (the build's compiled module)")
    inst = _kiln.instance(ctx.record, MODEL, engine, "first instance (captures one CUDA graph per bucket)")
    got = _kiln.run_chunks(inst, feeds, min(256, max(batches)))["prob"]
    _kiln.check(ctx.record, MODEL, "kiln fp32 engine vs ONNX Runtime fp32", got, reference)
    if labels is not None:
        report = measure_accuracy(reference, got, task="ctr", labels=labels)
        ctx.record(
            "accuracy", model=MODEL, variant="kiln fp32 engine AUC vs ONNX Runtime", **report.to_json()
        )
    _kiln.time_engine(ctx.record, MODEL, inst, feeds_for=feed_for, batches=batches, smoke=ctx.smoke)
    second = _kiln.instance(ctx.record, MODEL, engine, "second instance")
    _kiln.time_instances(
        ctx.record, MODEL, [inst, second], feed=feed_for(256), batch=256, seconds=1.0 if ctx.smoke else 3.0
    )
    inst.close()
    second.close()
    engine.close()
