"""``ctr``: a DLRM-style click-through-rate model and its traffic.

26 embedding tables (one Gather each) and 13 dense features go through a bottom MLP, a pairwise
dot interaction (DLRM's), a top MLP and a sigmoid. Inputs ``dense`` FP32 [batch, 13] and ``sparse``
INT64 [batch, 26]; output ``prob`` FP32 [batch, 1].

Traffic: per-table Zipf ids (a few hot ids; half the tables have hot ids that depend on the user
segment), heavy-tailed dense features (log-normal counts and Student-t values), and a user segment
``_key`` whose rare values have larger counts.
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
    round_scales,
    round_shift,
    round_shifts,
    tensor_input,
)
from kiln.examples._ort import Runner
from kiln.types import Array, TensorSpec

SEGMENT_PROBABILITIES = (0.34, 0.24, 0.16, 0.11, 0.07, 0.045, 0.025, 0.01)
NUM_LOG_NORMAL = 7
TARGET_MEDIAN_LOGIT = -1.1
TARGET_STD_LOGIT = 1.2
_FIT_COUNT = 2048
_WORLD = 0x0C7


@dataclass(frozen=True, slots=True)
class CtrConfig:
    rows: int
    dim: int
    bottom: tuple[int, ...]
    top: tuple[int, ...]
    num_dense: int = 13
    num_tables: int = 26


CONFIGS = {
    "full": CtrConfig(rows=10_000, dim=16, bottom=(64, 16), top=(256, 128)),
    "tiny": CtrConfig(rows=1_000, dim=4, bottom=(8, 4), top=(16, 8)),
}


def signature(size: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    cfg = CONFIGS[size]
    inputs = (
        TensorSpec("dense", "FP32", (-1, cfg.num_dense)),
        TensorSpec("sparse", "INT64", (-1, cfg.num_tables)),
    )
    return inputs, (TensorSpec("prob", "FP32", (-1, 1)),)


@dataclass(frozen=True)
class _World:
    """Traffic parameters: fixed for a size, independent of the model seed."""

    mean_log: F64  # [segments, NUM_LOG_NORMAL]
    sigma_log: F64  # [NUM_LOG_NORMAL]
    t_df: F64
    t_loc: F64  # [segments, num_dense - NUM_LOG_NORMAL]
    t_scale: F64
    cdfs: tuple[F64, ...]  # one Zipf law per table
    id_of_rank: data.I64  # [tables, segments, rows]


@cache
def _world(size: str) -> _World:
    cfg = CONFIGS[size]
    rng = rng_for(_WORLD, 0)
    segments = np.arange(len(SEGMENT_PROBABILITIES))[:, None]
    num_t = cfg.num_dense - NUM_LOG_NORMAL
    mean_log = rng.uniform(0.5, 2.5, NUM_LOG_NORMAL) + 0.15 * segments
    t_loc = rng.normal(0.0, 1.0, num_t) + 0.2 * segments
    exponents = rng.uniform(1.05, 1.3, cfg.num_tables)
    id_of_rank = np.empty((cfg.num_tables, len(SEGMENT_PROBABILITIES), cfg.rows), dtype=np.int64)
    for table in range(cfg.num_tables):
        order = rng.permutation(cfg.rows)
        step = cfg.rows // len(SEGMENT_PROBABILITIES) if table % 2 == 0 else 0
        for segment in range(len(SEGMENT_PROBABILITIES)):
            id_of_rank[table, segment] = np.roll(order, -segment * step)
    return _World(
        mean_log=mean_log,
        sigma_log=rng.uniform(0.8, 1.5, NUM_LOG_NORMAL),
        t_df=rng.uniform(2.5, 4.0, num_t),
        t_loc=t_loc,
        t_scale=rng.uniform(0.5, 3.0, num_t),
        cdfs=tuple(data.zipf_cdf(cfg.rows, float(s)) for s in exponents),
        id_of_rank=id_of_rank,
    )


def sample_block(size: str, rng: np.random.Generator, count: int) -> dict[str, Array]:
    """``count`` requests: ``dense``, ``sparse`` and the user segment ``_key``."""
    cfg, world = CONFIGS[size], _world(size)
    key = data.categorical(rng, SEGMENT_PROBABILITIES, count)
    counts = data.log_normal(
        rng, world.mean_log[key], np.broadcast_to(world.sigma_log, (count, NUM_LOG_NORMAL))
    )
    values = world.t_loc[key] + world.t_scale * np.stack(
        [data.student_t(rng, (count,), float(df)) for df in world.t_df], axis=1
    )
    dense = np.concatenate([counts, values], axis=1).astype(np.float32)
    sparse = np.empty((count, cfg.num_tables), dtype=np.int64)
    for table, cdf in enumerate(world.cdfs):
        ranks = data.zipf_ranks(rng, cdf, (count,))
        sparse[:, table] = world.id_of_rank[table, key, ranks]
    return {"dense": dense, "sparse": sparse, "_key": key}


def labels(outputs: list[Array], rng: np.random.Generator) -> Array:
    """Clicks drawn as Bernoulli(model probability), so AUC against them is meaningful."""
    prob = outputs[0].reshape(-1).astype(np.float64)
    return (rng.random(prob.shape) < prob).astype(np.int64)


def build(size: str, seed: int) -> ModelProto:
    """The ``ctr`` graph for ``size``; ``seed`` picks the weights, never the structure."""
    cfg = CONFIGS[size]
    fit = sample_block(size, rng_for(seed, STREAM_FIT), _FIT_COUNT)
    params = _init_params(cfg, rng_for(seed, STREAM_WEIGHTS), fit["dense"].astype(np.float64))
    trunk = Runner(_graph(cfg, params, head=False)).run(fit)[0].astype(np.float64)
    raw = trunk @ params["head.weight"][:, 0]
    median = float(np.median(raw))
    spread = float(np.subtract(*np.percentile(raw, [75, 25]))) / 1.349
    scale = round_scale(TARGET_STD_LOGIT / spread)
    params["head.weight"] = params["head.weight"] * scale
    params["head.bias"] = np.array([round_shift(TARGET_MEDIAN_LOGIT - scale * median)])
    return _graph(cfg, params, head=True)


def _init_params(cfg: CtrConfig, rng: np.random.Generator, dense: F64) -> dict[str, F64]:
    params: dict[str, F64] = {}
    fan_in = cfg.num_dense
    for i, width in enumerate(cfg.bottom):
        params[f"bottom.{i}.weight"] = normal(rng, (fan_in, width), np.sqrt(2.0 / fan_in))
        params[f"bottom.{i}.bias"] = normal(rng, (width,), 0.05)
        fan_in = width
    # Fold a robust standardisation of the dense features into the first layer, as a trained
    # model's input scaling would be: heavy tails stay heavy, the bulk lands near unit scale.
    q25, median, q75 = np.percentile(dense, [25, 50, 75], axis=0)
    scale = round_scales(np.maximum(q75 - q25, 1e-3))
    centre = round_shifts(median, scale)
    first = params["bottom.0.weight"]
    params["bottom.0.bias"] = params["bottom.0.bias"] - (centre / scale) @ first
    params["bottom.0.weight"] = first / scale[:, None]
    for table in range(cfg.num_tables):
        params[f"emb.{table}.weight"] = normal(rng, (cfg.rows, cfg.dim), cfg.dim**-0.25)
    fan_in = cfg.bottom[-1] + _num_pairs(cfg)
    for i, width in enumerate(cfg.top):
        params[f"top.{i}.weight"] = normal(rng, (fan_in, width), np.sqrt(2.0 / fan_in))
        params[f"top.{i}.bias"] = normal(rng, (width,), 0.05)
        fan_in = width
    params["head.weight"] = normal(rng, (fan_in, 1), np.sqrt(1.0 / fan_in))
    params["head.bias"] = np.zeros(1)
    return params


def _num_pairs(cfg: CtrConfig) -> int:
    features = cfg.num_tables + 1
    return features * (features - 1) // 2


def _graph(cfg: CtrConfig, params: dict[str, F64], *, head: bool) -> ModelProto:
    g = GraphBuilder(params)
    x = "dense"
    for i in range(len(cfg.bottom)):
        x = g.op("Relu", [g.gemm(x, f"bottom.{i}")], f"bottom.{i}/Relu")
    bottom = x
    embedded = []
    for table in range(cfg.num_tables):
        column = g.const(f"sparse.column{table}", np.array(table), np.int64)
        ids = g.op("Gather", ["sparse", column], f"emb.{table}/ids", axis=1)
        embedded.append(g.op("Gather", [g.param(f"emb.{table}.weight"), ids], f"emb.{table}"))
    x = _interaction(g, cfg, bottom, embedded)
    for i in range(len(cfg.top)):
        x = g.op("Relu", [g.gemm(x, f"top.{i}")], f"top.{i}/Relu")
    inputs = [
        tensor_input("dense", TensorProto.FLOAT, [BATCH, cfg.num_dense]),
        tensor_input("sparse", TensorProto.INT64, [BATCH, cfg.num_tables]),
    ]
    if not head:
        g.op("Identity", [x], "trunk")
        outputs = [tensor_input("trunk", TensorProto.FLOAT, [BATCH, cfg.top[-1]])]
        return g.model(inputs, outputs, graph_name="ctr_trunk", doc="")
    g.op("Sigmoid", [g.gemm(x, "head")], "prob")
    outputs = [tensor_input("prob", TensorProto.FLOAT, [BATCH, 1])]
    return g.model(inputs, outputs, graph_name="ctr", doc=__doc__ or "")


def _interaction(g: GraphBuilder, cfg: CtrConfig, bottom: str, embedded: list[str]) -> str:
    """DLRM's dot interaction: all pairwise dot products of the 27 feature vectors, plus ``bottom``."""
    features = cfg.num_tables + 1
    stacked = g.op(
        "Reshape",
        [
            g.op("Concat", [bottom, *embedded], "interact/concat", axis=1),
            g.const("interact.shape", [0, features, cfg.dim], np.int64),
        ],
        "interact/stack",
    )
    transposed = g.op("Transpose", [stacked], "interact/transpose", perm=[0, 2, 1])
    dots = g.op("MatMul", [stacked, transposed], "interact/dot")
    flat = g.op(
        "Reshape", [dots, g.const("interact.flat", [0, features * features], np.int64)], "interact/flat"
    )
    rows, cols = np.tril_indices(features, k=-1)
    pairs_index = g.const("interact.pairs", rows * features + cols, np.int64)
    pairs = g.op("Gather", [flat, pairs_index], "interact/pairs", axis=1)
    return g.op("Concat", [bottom, pairs], "interact/out", axis=1)
