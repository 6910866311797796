"""``cnn``: a ResNet-18-style image classifier and its images.

``image`` FP32 [batch, 3, 224, 224] -> ``logits`` FP32 [batch, classes]: a 7x7 stem, max pool, four
stages of two basic blocks (64/128/256/512 channels, 1x1 projection shortcuts), global average pool
and one fully connected layer. BatchNorm is folded into the convolutions, as an exporter would do.

The images come in classes: each class has a prototype image (fixed for the example, whatever the
seed), and an image of a class is its prototype blended with a random image. The weights are
He-initialised, then every convolution is given the per-channel scale and shift a trained
BatchNorm would have: a float64 pass over the class prototypes measures each channel's mean and
standard deviation, and a random gamma/beta is applied on top. The same pass gives each class's
pooled features, and the classifier is fitted on them as a nearest-class-mean classifier. Its
predictions therefore have the margins of a trained classifier (most images sit much closer to
their own class than to any other, a few are ambiguous), not the near-ties of random logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from onnx import ModelProto, TensorProto

from kiln.examples import data
from kiln.examples._graph import (
    BATCH,
    F64,
    STREAM_WEIGHTS,
    GraphBuilder,
    normal,
    rng_for,
    round_scale,
    round_scales,
    round_shifts,
    tensor_input,
)
from kiln.types import Array, TensorSpec

TARGET_LOGIT_STD = 4.0
PROTOTYPE_SEED = 20261122
"""The random stream of the class prototypes: part of the example's data, not of a model's seed."""
MIX = (0.8, 1.0)
"""An image is ``w * prototype + (1 - w) * random image``, ``w`` uniform in this range."""


@dataclass(frozen=True, slots=True)
class CnnConfig:
    image: int
    widths: tuple[int, int, int, int]
    classes: int
    blocks_per_stage: int = 2


CONFIGS = {
    "full": CnnConfig(image=224, widths=(64, 128, 256, 512), classes=32),
    "tiny": CnnConfig(image=32, widths=(8, 16, 32, 64), classes=10),
}


def signature(size: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    cfg = CONFIGS[size]
    inputs = (TensorSpec("image", "FP32", (-1, 3, cfg.image, cfg.image)),)
    return inputs, (TensorSpec("logits", "FP32", (-1, cfg.classes)),)


def sample_block(size: str, rng: np.random.Generator, count: int) -> dict[str, Array]:
    """``count`` smooth, ImageNet-normalised images of random classes (see :func:`prototypes`)."""
    cfg = CONFIGS[size]
    classes = rng.integers(0, cfg.classes, count)
    weight = rng.uniform(*MIX, (count, 1, 1, 1)).astype(np.float32)
    other = data.smooth_images(rng, count, cfg.image, cfg.image)
    return {"image": weight * prototypes(size)[classes] + (1.0 - weight) * other}


@lru_cache(maxsize=2)
def prototypes(size: str) -> data.F32:
    """One smooth image per class, the same for every seed (read-only)."""
    cfg = CONFIGS[size]
    images = data.smooth_images(np.random.default_rng(PROTOTYPE_SEED), cfg.classes, cfg.image, cfg.image)
    images.flags.writeable = False
    return images


def labels(outputs: list[Array], rng: np.random.Generator) -> Array:
    """The fp32 model's own top-1 class (so accuracy against labels is top-1 agreement)."""
    del rng
    return np.asarray(np.argmax(outputs[0], axis=1), dtype=np.int64)


def build(size: str, seed: int) -> ModelProto:
    """The ``cnn`` graph for ``size``; ``seed`` picks the weights, never the structure."""
    cfg = CONFIGS[size]
    images = prototypes(size)
    net = _Net(rng_for(seed, STREAM_WEIGHTS))
    x = net.conv_bn(("image", images.astype(np.float64).transpose(0, 2, 3, 1)), cfg.widths[0], 7, 2, "stem")
    x = net.max_pool(net.relu(x, "stem/Relu"), "stem/MaxPool")
    for stage, width in enumerate(cfg.widths):
        for block in range(cfg.blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            x = net.basic_block(x, width, stride, f"layer{stage + 1}.{block}")
    net.classifier(x, cfg.classes)
    inputs = [tensor_input("image", TensorProto.FLOAT, [BATCH, 3, cfg.image, cfg.image])]
    outputs = [tensor_input("logits", TensorProto.FLOAT, [BATCH, cfg.classes])]
    return net.g.model(inputs, outputs, graph_name="cnn", doc=__doc__ or "")


_Act = tuple[str, F64]  # a tensor's name in the graph and its float64 value on the sample images (NHWC)


class _Net:
    """Emits the graph and, alongside, computes each activation on the sample images in float64."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.g = GraphBuilder()
        self.rng = rng

    def conv_bn(self, x: _Act, out: int, kernel: int, stride: int, name: str) -> _Act:
        """Conv with a folded BatchNorm whose statistics come from the sample images."""
        channels = x[1].shape[3]
        weight = normal(
            self.rng, (out, channels, kernel, kernel), np.sqrt(2.0 / (channels * kernel * kernel))
        )
        z = _conv(x[1], weight, stride, kernel // 2)
        std = round_scales(np.maximum(z.std(axis=(0, 1, 2)), 1e-6))
        mean = round_shifts(z.mean(axis=(0, 1, 2)), std)
        branch_end = name.endswith(".conv2")
        gamma = np.exp(self.rng.normal(np.log(0.5) if branch_end else 0.0, 0.3, out))
        beta = self.rng.normal(0.0 if branch_end else -0.1, 0.1 if branch_end else 0.2, out)
        factor = gamma / std
        bias = beta - mean * factor
        folded = weight * factor[:, None, None, None]
        pad = kernel // 2
        self.g.op(
            "Conv",
            [x[0], self.g.const(f"{name}.weight", folded), self.g.const(f"{name}.bias", bias)],
            name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
        )
        return name, z * factor + bias

    def relu(self, x: _Act, name: str) -> _Act:
        return self.g.op("Relu", [x[0]], name), np.maximum(x[1], 0.0)

    def max_pool(self, x: _Act, name: str) -> _Act:
        padded = np.pad(x[1], ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
        windows = sliding_window_view(padded, (3, 3), axis=(1, 2))[:, ::2, ::2]
        self.g.op("MaxPool", [x[0]], name, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        return name, windows.max(axis=(4, 5))

    def basic_block(self, x: _Act, width: int, stride: int, name: str) -> _Act:
        h = self.relu(self.conv_bn(x, width, 3, stride, f"{name}.conv1"), f"{name}/Relu1")
        h = self.conv_bn(h, width, 3, 1, f"{name}.conv2")
        shortcut = x
        if stride != 1 or x[1].shape[3] != width:
            shortcut = self.conv_bn(x, width, 1, stride, f"{name}.downsample")
        added = self.g.op("Add", [h[0], shortcut[0]], f"{name}/Add")
        return self.relu((added, h[1] + shortcut[1]), f"{name}/Relu2")

    def classifier(self, x: _Act, classes: int) -> None:
        """Global average pool and a nearest-class-mean classifier on the prototypes' features.

        ``x`` holds one image per class (the prototypes). The logit of class ``c`` is
        ``s * (f . m_c - |m_c|^2 / 2)`` for the centred pooled features ``f``, where ``m_c`` is the
        class's centred mean: the nearest mean wins, and the margin is half the difference of
        squared distances. ``s`` spreads a prototype's logits with a standard deviation of about 4.
        """
        pooled = x[1].mean(axis=(1, 2))
        if pooled.shape[0] != classes:
            raise ValueError(f"the classifier is fitted on one image per class, got {pooled.shape[0]}")
        spread = round_scales(np.maximum(pooled.std(axis=0), 1e-6))
        centre = round_shifts(pooled.mean(axis=0), spread)
        means = round_shifts(pooled - centre, np.broadcast_to(spread, pooled.shape))
        logits = means @ means.T - 0.5 * (means * means).sum(axis=1)[None, :]
        scale = round_scale(TARGET_LOGIT_STD / max(float(logits.std(axis=1).mean()), 1e-9))
        flat = self.g.op("Flatten", [self.g.op("GlobalAveragePool", [x[0]], "pool")], "flatten", axis=1)
        w = self.g.const("fc.weight", means * scale)
        b = self.g.const("fc.bias", -(means @ centre + 0.5 * (means * means).sum(axis=1)) * scale)
        self.g.op("Gemm", [flat, w, b], "logits", transB=1)


def _conv(x: F64, weight: F64, stride: int, pad: int) -> F64:
    """Convolution of NHWC ``x`` with OIHW ``weight`` in float64 (im2col and one matrix product)."""
    out, channels, kernel, _ = weight.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(padded, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    n, h, w = windows.shape[:3]
    columns = windows.reshape(n * h * w, channels * kernel * kernel)
    return np.asarray((columns @ weight.reshape(out, -1).T).reshape(n, h, w, out), dtype=np.float64)
