"""How kiln builds each example model: the build spec per precision, and why.

``build_spec(name, precision)`` gives the spec ``kiln demo`` and the foundation benchmark use:
the example's task, shape profiles and batch limit, and for int8 the calibration method and the
parts left in fp32 that were measured to keep each model within its accuracy bar. The measurements
behind each choice are in ``BENCHMARKS.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.compile.spec import BuildSpec, CalibrationMethod, CalibrationSpec, Precision
from kiln.examples import Size, get_example


@dataclass(frozen=True, slots=True)
class Int8Recipe:
    """The int8 choices for one example.

    Fields:
        method: calibration method.
        per_channel: int8 weights per output channel.
        keep_fp32_nodes / keep_fp32_op_types: what stays in fp32.
        float_output_op_types: quantized op types whose results go on as floats.
        max_accuracy_drop: the bound the demo builds under (the example's own bar, in its task's
            drop: 1 - top-1 agreement, AUC loss, 1 - Spearman).
        why: one line on what was measured.
        disable_fusions: ONNX Runtime optimizers the int8 engine is built without (the
            onnxruntime backend option of that name), measured faster on this kind of CPU.
    """

    method: CalibrationMethod
    per_channel: bool
    keep_fp32_nodes: tuple[str, ...]
    keep_fp32_op_types: tuple[str, ...]
    max_accuracy_drop: float
    why: str
    float_output_op_types: tuple[str, ...] = ()
    disable_fusions: tuple[str, ...] = ()


INT8_RECIPES: dict[str, Int8Recipe] = {
    "ctr": Int8Recipe(
        method="entropy",
        per_channel=True,
        keep_fp32_nodes=("interact/dot", "bottom.0"),
        keep_fp32_op_types=("Gather", "Concat", "Reshape", "Transpose"),
        max_accuracy_drop=0.005,
        why="quantizing everything drops AUC by 0.23: the dot interaction of 27 vectors and the "
        "heavy-tailed raw dense features do not fit 8 bits; entropy ranges on the MLP only keep it "
        "near 0.002",
    ),
    "cnn": Int8Recipe(
        method="minmax",
        per_channel=True,
        keep_fp32_nodes=(),
        keep_fp32_op_types=(),
        max_accuracy_drop=0.1,
        why="per-channel weights with min/max ranges keep top-1 agreement near 0.99 on the "
        "class-structured images; the error is spread over all 20 convolutions, so no single "
        "layer kept in fp32 buys much",
    ),
    "ranker": Int8Recipe(
        method="minmax",
        per_channel=True,
        keep_fp32_nodes=(),
        keep_fp32_op_types=(
            "Add",
            "Gather",
            "LayerNormalization",
            "Mul",
            "Reshape",
            "Softmax",
            "Transpose",
            "Unsqueeze",
        ),
        float_output_op_types=("MatMul", "Gemm"),
        disable_fusions=("SkipLayerNormFusion",),
        max_accuracy_drop=0.02,
        why="quantizing only the matrix products keeps Spearman at 0.995; quantizing the "
        "embeddings, LayerNorms, Softmax and residual Adds too drops it to 0.76. Their results go "
        "on as floats: ONNX Runtime fuses the bias add and skips a requantization, 10-25 % faster. "
        "Without the SkipLayerNormalization fusion a batch of the int8 engine took 18-25 % less time "
        "on one thread and 10-18 % less on two (batch 1-16)",
    ),
}


def build_spec(
    name: str,
    precision: Precision = "int8",
    *,
    size: Size = "full",
    max_accuracy_drop: float | None = None,
    num_calibration_samples: int | None = None,
) -> BuildSpec:
    """The spec kiln uses for example ``name`` at ``precision``: task, profiles and batch limit
    from the example; for int8 the recipe (all the example's calibration samples unless
    ``num_calibration_samples``). ``max_accuracy_drop`` is left unset unless given."""
    example = get_example(name)
    spec = BuildSpec(
        precision=precision,
        profiles=example.profiles(size),
        max_batch_size=example.max_batch_size,
        task=example.task,
        max_accuracy_drop=max_accuracy_drop,
    )
    if precision != "int8":
        return spec
    recipe = INT8_RECIPES[name]
    count = num_calibration_samples or example.num_calibration
    return spec.with_changes(
        calibration=CalibrationSpec(method=recipe.method, num_samples=count),
        per_channel=recipe.per_channel,
        keep_fp32_nodes=recipe.keep_fp32_nodes,
        keep_fp32_op_types=recipe.keep_fp32_op_types,
        float_output_op_types=recipe.float_output_op_types,
        backend_options=(("disable_fusions", ",".join(recipe.disable_fusions)),)
        if recipe.disable_fusions
        else (),
    )
