"""The fp32 reference every converted engine is judged against.

The reference is the *source* model run by ONNX Runtime with graph optimizations off: no fusions,
no layout changes, no kernels chosen for this CPU, so it stands for what the model computes and
not for what one optimized build of it computes.
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
) -> dict[str, Array]:
    """Every output of ``model`` (fp32, optimizations off) on ``samples``, concatenated on axis 0.

    ``threads`` defaults to every CPU this process may use. Calls ``progress("fp32 reference",
    done, total)`` after each batch. ``BuildError`` when ONNX Runtime cannot load or run the model.
    """
    import onnxruntime as ort  # noqa: PLC0415 (heavy; only when a reference is run)

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads or usable_cpus()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
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
