"""The onnxruntime backend's build options (``BuildSpec.backend_options``), parsed in pure code.

Options are strings in the spec, so they are part of the engine cache key:

| option | values | default |
|---|---|---|
| ``disable_fusions`` | ONNX Runtime optimizer names, comma-separated (``SkipLayerNormFusion``) | none |

``disable_fusions`` leaves the named optimizers out when the engine is optimized for this CPU (and
when the refit map probes the optimizer, so that the probe sees the same graph). A fusion is not
always faster: the int8 ranker ran faster without ``SkipLayerNormFusion`` (see ``docs/backends.md``).
ONNX Runtime itself ignores names it does not know, so kiln checks them against
``KNOWN_OPTIMIZERS`` (the optimizers of ONNX Runtime 1.31/1.32 worth turning off for a served
model): a misspelt name is a ``BuildError`` instead of an option that silently does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kiln.errors import BuildError, describe

KNOWN_OPTIONS: tuple[str, ...] = ("disable_fusions",)

KNOWN_OPTIMIZERS: frozenset[str] = frozenset(
    {
        "AttentionFusion",
        "BiasDropoutFusion",
        "BiasGeluFusion",
        "BiasSkipLayerNormFusion",
        "BiasSoftmaxFusion",
        "CastElimination",
        "CommonSubexpressionElimination",
        "ConstantFolding",
        "ConvActivationFusion",
        "ConvAddActivationFusion",
        "ConvAddFusion",
        "ConvBNFusion",
        "ConvMulFusion",
        "DoubleQDQPairsRemover",
        "DynamicQuantizeMatMulFusion",
        "EliminateDropout",
        "EliminateIdentity",
        "EmbedLayerNormFusion",
        "FastGeluFusion",
        "GatherToSliceFusion",
        "GeluApproximation",
        "GeluFusionL1",
        "GeluFusionL2",
        "GemmActivationFusion",
        "GemmSumFusion",
        "GemmTransposeFusion",
        "LayerNormFusionL1",
        "LayerNormFusionL2",
        "MatMulAddFusion",
        "MatMulIntegerToFloatFusion",
        "MatMulScaleFusion",
        "MatmulTransposeFusion",
        "NchwcTransformer",
        "NhwcTransformer",
        "NoopElimination",
        "QDQPropagationTransformer",
        "QDQS8ToU8Transformer",
        "QDQSelectorActionTransformer",
        "QuickGeluFusion",
        "ReshapeFusion",
        "SimplifiedLayerNormFusion",
        "SkipLayerNormFusion",
        "TransposeOptimizer",
    }
)
"""Optimizer names ``disable_fusions`` accepts (ONNX Runtime's own names for its graph transformers)."""


@dataclass(frozen=True, slots=True)
class OrtBuildOptions:
    """Parsed build options. ``disabled_fusions``: optimizer names, sorted and distinct."""

    disabled_fusions: tuple[str, ...] = ()


def parse_options(options: Mapping[str, str]) -> OrtBuildOptions:
    """``OrtBuildOptions`` from ``BuildSpec.backend_options``; ``BuildError`` naming an unknown
    option or optimizer name."""
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        raise BuildError(
            describe(
                "unknown onnxruntime backend option", seen=unknown, fix=f"use {', '.join(KNOWN_OPTIONS)}"
            )
        )
    return OrtBuildOptions(disabled_fusions=parse_fusions(options.get("disable_fusions", "")))


def parse_fusions(text: str) -> tuple[str, ...]:
    """Comma-separated optimizer names, sorted and distinct; ``BuildError`` for a name ONNX
    Runtime would silently ignore."""
    names = sorted({part.strip() for part in text.split(",") if part.strip()})
    unknown = [name for name in names if name not in KNOWN_OPTIMIZERS]
    if unknown:
        raise BuildError(
            describe(
                "onnxruntime backend option disable_fusions names unknown optimizers",
                seen=unknown,
                fix=f"use names from {', '.join(sorted(KNOWN_OPTIMIZERS))} (comma-separated, "
                "case as written), e.g. disable_fusions=SkipLayerNormFusion",
            )
        )
    return tuple(names)
