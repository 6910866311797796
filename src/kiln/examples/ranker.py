"""``ranker``: a small BERT-style encoder that scores a document, and its token streams.

``input_ids`` INT64 [batch, 128] and ``attention_mask`` INT64 [batch, 128] -> ``score`` FP32
[batch, 1]. Word and position embeddings, four post-LayerNorm encoder layers (hidden 256, 4 heads,
FFN 1024 with the erf GELU), an additive mask bias ``(1 - mask) * -10000``, and the [CLS] vector
through a tanh pooler to one score.

The attention is written in the pattern BERT exporters produce (q/k/v MatMul+Add from one
LayerNormalization, Reshape to heads, k transposed with perm 0,2,3,1, Div by sqrt(head size), the
mask as Unsqueeze/Unsqueeze/Cast/Sub/Mul, Softmax on axis 3, GELU as the erf formula). ONNX
Runtime 1.31's CPU optimizer (ORT_ENABLE_ALL) turns each layer's GELU into ``BiasGelu``, each
residual Add + LayerNormalization into ``SkipLayerNormalization``, the Div into the QK MatMul
(``FusedMatMul``) and the pooler Gemm + Tanh into ``FusedGemm``. Its built-in attention fusion
only matches opset <= 12 graphs, so the attention itself stays as MatMul/Softmax; the offline
``onnxruntime.transformers`` optimizer (``model_type="bert"``) does fuse each layer into one
``Attention`` node.

Traffic: Zipf-distributed tokens (a global vocabulary law mixed with a per-document topic),
variable real lengths with the padding masked out, and a length bucket as ``_key``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from onnx import ModelProto, TensorProto

from kiln.examples import data
from kiln.examples._graph import (
    BATCH,
    F64,
    STREAM_FIT,
    STREAM_WEIGHTS,
    GraphBuilder,
    normal,
    rng_for,
    round_scale,
    round_shift,
    tensor_input,
)
from kiln.examples._ort import Runner
from kiln.types import Array, TensorSpec

LENGTH_BUCKETS = ((0.55, 0.10, 0.25), (0.35, 0.25, 0.75), (0.10, 0.75, 1.0))
"""(probability, shortest, longest) of each ``_key`` value, lengths as fractions of the sequence."""
NUM_TOPICS = 16
TOPIC_SHARE = 0.3
ZIPF_EXPONENT = 1.1
_FIT_COUNT = 64
_WORLD = 0xBE


@dataclass(frozen=True, slots=True)
class RankerConfig:
    vocab: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    sequence: int
    cls_id: int
    sep_id: int
    first_word_id: int
    pad_id: int = 0


CONFIGS = {
    "full": RankerConfig(30522, 256, 4, 4, 1024, 128, cls_id=101, sep_id=102, first_word_id=999),
    "tiny": RankerConfig(1000, 32, 4, 4, 64, 16, cls_id=1, sep_id=2, first_word_id=5),
}


def signature(size: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    cfg = CONFIGS[size]
    inputs = (
        TensorSpec("input_ids", "INT64", (-1, cfg.sequence)),
        TensorSpec("attention_mask", "INT64", (-1, cfg.sequence)),
    )
    return inputs, (TensorSpec("score", "FP32", (-1, 1)),)


@cache
def _word_order(size: str) -> np.ndarray:
    """Word ids by frequency rank: row 0 the global law, rows 1.. one per topic."""
    cfg = CONFIGS[size]
    rng = rng_for(_WORLD, 0)
    words = np.arange(cfg.first_word_id, cfg.vocab, dtype=np.int64)
    return np.stack([rng.permutation(words) for _ in range(NUM_TOPICS + 1)])


def sample_block(size: str, rng: np.random.Generator, count: int) -> dict[str, Array]:
    """``count`` documents: ``input_ids``, ``attention_mask`` and the length bucket ``_key``."""
    cfg = CONFIGS[size]
    order = _word_order(size)
    key = data.categorical(rng, tuple(b[0] for b in LENGTH_BUCKETS), count)
    low = np.array([max(3, round(b[1] * cfg.sequence)) for b in LENGTH_BUCKETS])
    high = np.array([max(3, round(b[2] * cfg.sequence)) for b in LENGTH_BUCKETS])
    length = rng.integers(low[key], high[key] + 1)
    topic = rng.integers(1, NUM_TOPICS + 1, count)
    ranks = data.zipf_ranks(rng, data.zipf_cdf(order.shape[1], ZIPF_EXPONENT), (count, cfg.sequence))
    from_topic = rng.random((count, cfg.sequence)) < TOPIC_SHARE
    ids = order[np.where(from_topic, topic[:, None], 0), ranks]
    position = np.arange(cfg.sequence)[None, :]
    ids[:, 0] = cfg.cls_id
    ids = np.where(position == length[:, None] - 1, cfg.sep_id, ids)
    mask = (position < length[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, cfg.pad_id).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "_key": key}


def build(size: str, seed: int) -> ModelProto:
    """The ``ranker`` graph for ``size``; ``seed`` picks the weights, never the structure."""
    cfg = CONFIGS[size]
    params = _init_params(cfg, rng_for(seed, STREAM_WEIGHTS))
    fit = sample_block(size, rng_for(seed, STREAM_FIT), _FIT_COUNT)
    pooled = Runner(_graph(cfg, params, head=False)).run(fit)[0].astype(np.float64)
    raw = pooled @ params["head.weight"][:, 0]
    scale = round_scale(1.0 / max(float(raw.std()), 1e-6))
    params["head.weight"] = params["head.weight"] * scale
    params["head.bias"] = np.array([round_shift(-scale * float(raw.mean()))])
    return _graph(cfg, params, head=True)


def _init_params(cfg: RankerConfig, rng: np.random.Generator) -> dict[str, F64]:
    h, f = cfg.hidden, cfg.ffn
    p: dict[str, F64] = {
        "embeddings.word.weight": normal(rng, (cfg.vocab, h), 1.0),
        "embeddings.position.weight": normal(rng, (cfg.sequence, h), 0.5),
    }
    _init_norm(p, rng, "embeddings.norm", h)
    for layer in range(cfg.layers):
        name = f"layer{layer}"
        for part in ("query", "key", "value", "output"):
            p[f"{name}.attention.{part}.weight"] = normal(rng, (h, h), h**-0.5)
            p[f"{name}.attention.{part}.bias"] = normal(rng, (h,), 0.02)
        _init_norm(p, rng, f"{name}.attention.norm", h)
        p[f"{name}.ffn.in.weight"] = normal(rng, (h, f), h**-0.5)
        p[f"{name}.ffn.in.bias"] = normal(rng, (f,), 0.1)
        p[f"{name}.ffn.out.weight"] = normal(rng, (f, h), (2.0 / f) ** 0.5)
        p[f"{name}.ffn.out.bias"] = normal(rng, (h,), 0.02)
        _init_norm(p, rng, f"{name}.ffn.norm", h)
    p["pooler.weight"] = normal(rng, (h, h), h**-0.5)
    p["pooler.bias"] = normal(rng, (h,), 0.02)
    p["head.weight"] = normal(rng, (h, 1), h**-0.5)
    p["head.bias"] = np.zeros(1)
    return p


def _init_norm(params: dict[str, F64], rng: np.random.Generator, name: str, width: int) -> None:
    params[f"{name}.scale"] = 1.0 + normal(rng, (width,), 0.1)
    params[f"{name}.bias"] = normal(rng, (width,), 0.05)


def _graph(cfg: RankerConfig, params: dict[str, F64], *, head: bool) -> ModelProto:
    g = GraphBuilder(params)
    words = g.op("Gather", [g.param("embeddings.word.weight"), "input_ids"], "embeddings.word")
    embedded = g.op("Add", [words, g.param("embeddings.position.weight")], "embeddings/Add")
    x = _norm(g, embedded, "embeddings.norm")
    mask = _mask_bias(g)
    for layer in range(cfg.layers):
        name = f"layer{layer}"
        h = _norm(
            g,
            g.op("Add", [_attention(g, cfg, x, mask, name), x], f"{name}/residual1"),
            f"{name}.attention.norm",
        )
        inner = _gelu(g, g.linear(h, f"{name}.ffn.in"), f"{name}.ffn/gelu")
        x = _norm(
            g, g.op("Add", [g.linear(inner, f"{name}.ffn.out"), h], f"{name}/residual2"), f"{name}.ffn.norm"
        )
    cls = g.op("Gather", [x, g.const("pooler.cls_index", np.array(0), np.int64)], "pooler/cls", axis=1)
    pooled = g.op("Tanh", [g.gemm(cls, "pooler")], "pooler/Tanh")
    inputs = [
        tensor_input("input_ids", TensorProto.INT64, [BATCH, cfg.sequence]),
        tensor_input("attention_mask", TensorProto.INT64, [BATCH, cfg.sequence]),
    ]
    if not head:
        g.op("Identity", [pooled], "trunk")
        outputs = [tensor_input("trunk", TensorProto.FLOAT, [BATCH, cfg.hidden])]
        return g.model(inputs, outputs, graph_name="ranker_trunk", doc="")
    g.op("Gemm", [pooled, g.param("head.weight"), g.param("head.bias")], "score")
    outputs = [tensor_input("score", TensorProto.FLOAT, [BATCH, 1])]
    return g.model(inputs, outputs, graph_name="ranker", doc=__doc__ or "")


def _norm(g: GraphBuilder, x: str, name: str) -> str:
    inputs = [x, g.param(f"{name}.scale"), g.param(f"{name}.bias")]
    return g.op("LayerNormalization", inputs, name, axis=-1, epsilon=1e-12)


def _mask_bias(g: GraphBuilder) -> str:
    """[batch, 1, 1, seq] additive bias: 0 where ``attention_mask`` is 1, -10000 where it is 0."""
    first = g.op("Unsqueeze", ["attention_mask", g.const("mask.axis1", [1], np.int64)], "mask/Unsqueeze1")
    second = g.op("Unsqueeze", [first, g.const("mask.axis2", [2], np.int64)], "mask/Unsqueeze2")
    as_float = g.op("Cast", [second], "mask/Cast", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const("mask.one", np.array(1.0)), as_float], "mask/Sub")
    return g.op("Mul", [inverted, g.const("mask.fill", np.array(-10000.0))], "mask/Mul")


def _attention(g: GraphBuilder, cfg: RankerConfig, x: str, mask: str, name: str) -> str:
    """Multi-head self-attention of ``x`` [batch, seq, hidden] with the additive ``mask`` bias."""
    head_size = cfg.hidden // cfg.heads
    split = g.const(f"{name}.attention.split_heads", [0, 0, cfg.heads, head_size], np.int64)

    def heads(part: str, perm: list[int]) -> str:
        prefix = f"{name}.attention.{part}"
        split_up = g.op("Reshape", [g.linear(x, prefix), split], f"{prefix}/Reshape")
        return g.op("Transpose", [split_up], f"{prefix}/Transpose", perm=perm)

    query, key, value = heads("query", [0, 2, 1, 3]), heads("key", [0, 2, 3, 1]), heads("value", [0, 2, 1, 3])
    scores = g.op("MatMul", [query, key], f"{name}.attention/scores")
    scale = g.const(f"{name}.attention.scale", np.array(np.sqrt(head_size)))
    masked = g.op(
        "Add", [g.op("Div", [scores, scale], f"{name}.attention/Div"), mask], f"{name}.attention/mask"
    )
    probs = g.op("Softmax", [masked], f"{name}.attention/Softmax", axis=3)
    context = g.op("MatMul", [probs, value], f"{name}.attention/context")
    merged = g.op("Transpose", [context], f"{name}.attention/merge", perm=[0, 2, 1, 3])
    merge = g.const(f"{name}.attention.merge_heads", [0, 0, cfg.hidden], np.int64)
    return g.linear(g.op("Reshape", [merged, merge], f"{name}.attention/Reshape"), f"{name}.attention.output")


def _gelu(g: GraphBuilder, x: str, name: str) -> str:
    """``x * 0.5 * (1 + erf(x / sqrt(2)))``, the pattern ORT fuses into Gelu (and BiasGelu)."""
    scaled = g.op("Div", [x, g.const(f"{name}.sqrt2", np.array(np.sqrt(2.0)))], f"{name}/Div")
    shifted = g.op(
        "Add", [g.op("Erf", [scaled], f"{name}/Erf"), g.const(f"{name}.one", np.array(1.0))], f"{name}/Add"
    )
    return g.op(
        "Mul",
        [g.op("Mul", [x, shifted], f"{name}/Mul"), g.const(f"{name}.half", np.array(0.5))],
        f"{name}/Mul2",
    )
