"""The fp32 reference every converted engine is judged against.

The reference is the *source* model run by ONNX Runtime in fp32. For an fp32 engine it runs with
graph optimizations off: no fusions, no layout changes, no kernels chosen for this CPU, so it
stands for what the model computes and not for what one optimized build of it computes (an
optimized reference would be the engine itself). For an int8 or fp16 engine, whose errors are
orders of magnitude larger, it may run optimized (``optimized=True``): ONNX Runtime's fp32
optimizations are exact rewrites up to float32 rounding (the example models: relative L2
difference at most 2.2e-6 from the unoptimized run, checked below 1e-5 by the tests), and the
optimized run is cheaper (the cnn: 30 % less time).

The reference runs beside other work: in a background thread while the engine is built or
refitted, and while the new engine runs on the same samples. Its pool threads therefore do not
spin-wait between pieces of work (ONNX Runtime's default): spinning threads hold a core that the
other session, or the reference's own session set-up, needs. On the full-size example cnn on two
cores (32 screening images beside its int8 engine) that made creating the optimized session
0.01-0.05 s faster and the pair 0-3 % faster: a small gain, and the safe setting on a shared
machine, as for kiln's engines (``docs/backends.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compile.accuracy import run_batches
from kiln.compile.backends.cpu import usable_cpus
from kiln.errors import BuildError, describe

if TYPE_CHECKING:
    import onnx
    import onnxruntime

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

    options = reference_options(threads=threads or usable_cpus(), optimized=optimized)
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


def reference_options(*, threads: int, optimized: bool) -> onnxruntime.SessionOptions:
    """Session options of the fp32 reference: ``threads`` intra-op threads that do not spin-wait,
    one inter-op thread, all of ONNX Runtime's graph optimizations or none (``optimized``)."""
    import onnxruntime as ort  # noqa: PLC0415 (heavy; only when a reference is run)

    levels = ort.GraphOptimizationLevel
    options = ort.SessionOptions()
    options.graph_optimization_level = levels.ORT_ENABLE_ALL if optimized else levels.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
