"""Samplers for example traffic that is *not* uniform noise.

Calibration methods (min/max, percentile, entropy) only disagree when activations have skew and
tails, so the generators here produce what production traffic has: power-law categorical ids with
a few hot values, heavy-tailed numeric features, rare segments that behave differently, smooth
natural-looking images, and token streams with a Zipf vocabulary and variable lengths.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def zipf_cdf(size: int, exponent: float) -> F64:
    """Cumulative probabilities of ranks ``0..size-1`` with ``p(rank) ∝ (rank + 1) ** -exponent``."""
    weights = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights)
    return np.asarray(cdf / cdf[-1], dtype=np.float64)


def zipf_ranks(rng: np.random.Generator, cdf: F64, shape: tuple[int, ...]) -> I64:
    """Ranks drawn from a Zipf law given by ``cdf`` (rank 0 is the most frequent)."""
    ranks = np.searchsorted(cdf, rng.random(shape), side="right")
    return np.minimum(ranks, len(cdf) - 1).astype(np.int64)


def categorical(rng: np.random.Generator, probabilities: tuple[float, ...], count: int) -> I64:
    """``count`` draws of ``0..len(probabilities)-1`` with the given probabilities."""
    cdf = np.cumsum(np.asarray(probabilities, dtype=np.float64))
    draws = np.searchsorted(cdf / cdf[-1], rng.random(count), side="right")
    return np.minimum(draws, len(probabilities) - 1).astype(np.int64)


def log_normal(rng: np.random.Generator, mean_log: F64, sigma_log: F64) -> F64:
    """Counts-like positive values: ``exp(N(mean_log, sigma_log))`` elementwise."""
    return np.asarray(np.exp(mean_log + sigma_log * rng.standard_normal(mean_log.shape)), dtype=np.float64)


def student_t(rng: np.random.Generator, shape: tuple[int, ...], df: float) -> F64:
    """Symmetric heavy tails (finite variance only for ``df > 2``)."""
    return np.asarray(rng.standard_t(df, size=shape), dtype=np.float64)


def _interpolation(size: int, grid: int) -> F64:
    """Linear interpolation weights [size, grid] from a coarse grid to ``size`` pixels."""
    position = np.linspace(0.0, grid - 1.0, size)
    low = np.clip(np.floor(position).astype(np.int64), 0, grid - 2)
    frac = position - low
    weights = np.zeros((size, grid))
    weights[np.arange(size), low] = 1.0 - frac
    weights[np.arange(size), low + 1] = frac
    return weights


def smooth_images(rng: np.random.Generator, count: int, height: int, width: int) -> F32:
    """Image-like [count, 3, height, width] tensors, normalised like ImageNet inputs.

    Each image mixes a colour gradient, a few soft blobs and low-frequency noise in [0, 1] pixel
    space, with a little fine grain, then is normalised with the ImageNet mean and std.
    """
    ys = np.linspace(-1.0, 1.0, height)
    xs = np.linspace(-1.0, 1.0, width)
    base = rng.uniform(0.2, 0.8, (count, 3, 1, 1))
    angle = rng.uniform(0.0, 2 * np.pi, (count, 1, 1, 1))
    slope = rng.normal(0.0, 0.15, (count, 3, 1, 1))
    ramp = np.cos(angle) * ys[:, None] + np.sin(angle) * xs[None, :]
    image = base + slope * ramp
    image += _blobs(rng, count, ys, xs)
    grid = 6
    noise = rng.normal(0.0, 0.12, (count, 3, grid, grid))
    image += _interpolation(height, grid) @ noise @ _interpolation(width, grid).T
    image += rng.normal(0.0, 0.02, image.shape)
    pixels = np.clip(image, 0.0, 1.0)
    mean = np.asarray(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD).reshape(1, 3, 1, 1)
    return np.asarray((pixels - mean) / std, dtype=np.float32)


def _blobs(rng: np.random.Generator, count: int, ys: F64, xs: F64, num_blobs: int = 3) -> F64:
    centre_y = rng.uniform(-0.8, 0.8, (count, num_blobs, 1))
    centre_x = rng.uniform(-0.8, 0.8, (count, num_blobs, 1))
    radius = rng.uniform(0.1, 0.5, (count, num_blobs, 1))
    colour = rng.normal(0.0, 0.3, (count, num_blobs, 3))
    along_y = np.exp(-0.5 * ((ys[None, None, :] - centre_y) / radius) ** 2)
    along_x = np.exp(-0.5 * ((xs[None, None, :] - centre_x) / radius) ** 2)
    return np.asarray(np.einsum("nkc,nky,nkx->ncyx", colour, along_y, along_x), dtype=np.float64)


def top_share(values: I64, num_values: int, fraction: float = 0.01) -> float:
    """Share of all occurrences taken by the ``fraction * num_values`` most frequent values."""
    counts = np.sort(np.bincount(values.ravel(), minlength=num_values))[::-1]
    top = max(1, round(num_values * fraction))
    return float(counts[:top].sum() / counts.sum())


def excess_kurtosis(values: F64 | F32) -> float:
    """Fourth standardised moment minus 3 (0 for a normal distribution)."""
    centred = np.asarray(values, dtype=np.float64) - float(np.mean(values))
    variance = float(np.mean(centred**2))
    return float(np.mean(centred**4) / variance**2 - 3.0) if variance > 0 else 0.0
