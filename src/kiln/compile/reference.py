"""The fp32 reference every converted engine is judged against.

The reference is the *source* model run by ONNX Runtime in fp32. For an fp32 engine it runs with
graph optimizations off: no fusions, no layout changes, no kernels chosen for this CPU, so it
stands for what the model computes and not for what one optimized build of it computes (an
optimized reference would be the engine itself). For an int8 or fp16 engine, whose errors are
orders of magnitude larger, it may run optimized (``optimized=True``): ONNX Runtime's fp32
optimizations are exact rewrites up to float32 rounding (the example models: relative L2
difference at most 2.2e-6 from the unoptimized run, checked below 1e-5 by the tests), and the
optimized run is cheaper (the cnn: 30 % less time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compile.accuracy import run_batches
from kiln.compile.backends.cpu import usable_cpus
from kiln.errors import BuildError, describe

if TYPE_CHECKING:
    import onnx

    from kiln.compile.backends.base import Progress
    from kiln.compile.data import SampleSet
    from kiln.types import Array, Tensors


def reference_outputs(
    model: onnx.ModelProto,
    samples: SampleSet,
    *,
    batch_size: int,
    progress: Progress | None = None,
    threads: int | None = None,
    optimized: bool = False,
    serialized: bytes | None = None,
) -> dict[str, Array]:
    """Every output of ``model`` (fp32; optimizations off, or all of ONNX Runtime's with
    ``optimized``) on ``samples``, concatenated on axis 0.

    ``serialized``: ``model``'s bytes when the caller has them (the model file as read), so that
    the model is not serialized again. ``threads`` defaults to every CPU this process may use.
    Calls ``progress("fp32 reference", done, total)`` after each batch. ``BuildError`` when ONNX
    Runtime cannot load or run the model.
    """
    import onnxruntime as ort  # noqa: PLC0415 (heavy; only when a reference is run)

    levels = ort.GraphOptimizationLevel
    options = ort.SessionOptions()
    options.graph_optimization_level = levels.ORT_ENABLE_ALL if optimized else levels.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads or usable_cpus()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        data = serialized if serialized is not None else model.SerializeToString()
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error classes
        raise BuildError(
            describe("ONNX Runtime cannot load the fp32 reference model", seen=str(exc)[-300:])
        ) from exc
    names = [o.name for o in session.get_outputs()]
    total = -(-len(samples) // batch_size)
    done = 0

    def run(batch: Tensors) -> dict[str, Array]:
        nonlocal done
        try:
            values = session.run(names, dict(batch))
        except Exception as exc:  # onnxruntime's own error classes
            raise BuildError(
                describe("the fp32 reference model failed on the samples", seen=str(exc)[-300:])
            ) from exc
        done += 1
        if progress is not None:
            progress("fp32 reference", done, total)
        return dict(zip(names, values, strict=True))

    return run_batches(run, samples, batch_size)
