"""Compiling a prepared module with ``torch.compile`` (Inductor), one graph per batch bucket, and
capturing PyTorch's compile artifacts so that a later load on the same target skips compilation.

Inductor runs without freezing (weights stay module buffers the compiled code reads by address, so
a refit only copies new values into them) and without its own CUDA graphs (each engine instance
captures its own, on its own stream and memory pool; see ``runners``). Shapes are static per
bucket by default; ``shapes=dynamic`` compiles one graph with a dynamic batch axis.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kiln.compile.backends.torch.options import TorchOptions
from kiln.errors import BuildError, describe
from kiln.types import ShapeProfile, TensorSpec

log = logging.getLogger(__name__)

Forward = Callable[..., tuple[torch.Tensor, ...]]

RECOMPILE_LIMIT = 4096
"""Dynamo's per-code-object cache limit, raised: every converted model shares ``forward``'s code
object, and each (model, bucket) is one entry; past the default of 8 dynamo would silently fall
back to eager."""

_TORCH_DTYPES = {
    "FP32": torch.float32,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "FP64": torch.float64,
    "INT64": torch.int64,
    "INT32": torch.int32,
    "INT16": torch.int16,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "BOOL": torch.bool,
}


def torch_dtype(spec: TensorSpec) -> torch.dtype:
    try:
        return _TORCH_DTYPES[spec.datatype]
    except KeyError:
        raise BuildError(
            describe(
                f"input/output {spec.name!r} has a datatype the torch backend cannot carry",
                seen=spec.datatype,
            )
        ) from None


def row_shapes(
    specs: Sequence[TensorSpec], profiles: Sequence[ShapeProfile], batchable: bool
) -> list[tuple[int, ...]]:
    """Each input's shape past the batch axis (the whole shape when not batchable). Dimensions that
    vary besides the batch axis must be fixed by a profile (min == max)."""
    by_input = {p.input: p for p in profiles}
    shapes = []
    for spec in specs:
        dims = list(spec.shape[1:] if batchable else spec.shape)
        profile = by_input.get(spec.name)
        offset = 1 if batchable else 0
        for index, dim in enumerate(dims):
            if dim >= 0:
                continue
            if profile is None or profile.min[index + offset] != profile.max[index + offset]:
                raise BuildError(
                    describe(
                        f"input {spec.name!r} varies in dimension {index + offset} besides the batch axis",
                        seen=list(spec.shape),
                        fix="give a profile whose min, opt and max agree past the batch axis "
                        "(CUDA graphs run fixed shapes), e.g. one engine per sequence length",
                    )
                )
            dims[index] = profile.max[index + offset]
        shapes.append(tuple(dims))
    return shapes


def sample_inputs(
    specs: Sequence[TensorSpec], shapes: Sequence[tuple[int, ...]], rows: int | None, device: torch.device
) -> list[torch.Tensor]:
    """Inputs to compile and warm up on: random floats (never zeros), zero ids, false flags."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    tensors = []
    for spec, shape in zip(specs, shapes, strict=True):
        full = (rows, *shape) if rows is not None else shape
        dtype = torch_dtype(spec)
        if dtype.is_floating_point:
            tensor = torch.randn(full, generator=generator, dtype=torch.float32).to(dtype)
        else:
            tensor = torch.zeros(full, dtype=dtype)
        tensors.append(tensor.to(device))
    return tensors


_NUMERICS = {"matmul": ("cuda", "matmul"), "conv": ("cudnn", "conv")}
"""Process-wide float32 precision switches that change compiled code (and PyTorch's cache keys)."""


def _numerics_owner(name: str) -> Any:
    backend, part = _NUMERICS[name]
    return getattr(getattr(torch.backends, backend), part, None)


def numerics_state() -> dict[str, str]:
    """This process's float32 matmul/convolution precision (``torch.backends.*.fp32_precision``);
    empty on a torch without that API."""
    state = {}
    for name in _NUMERICS:
        try:
            value = getattr(_numerics_owner(name), "fp32_precision", None)
        except (AttributeError, RuntimeError):
            value = None
        if isinstance(value, str):
            state[name] = value
    return state


@contextlib.contextmanager
def pinned_numerics(wanted: Mapping[str, object]) -> Iterator[None]:
    """Run the block under the precision settings an engine was built with (only those that differ
    are changed, and restored afterwards): compiled kernels and captured cuBLAS calls then match the
    build, and so do PyTorch's compile-cache keys."""
    current = numerics_state()
    changes = {k: str(v) for k, v in wanted.items() if k in current and current[k] != v}
    for name, value in changes.items():
        _numerics_owner(name).fp32_precision = value
    try:
        yield
    finally:
        for name in changes:
            _numerics_owner(name).fp32_precision = current[name]


def configure_torch(options: TorchOptions) -> None:
    """Process-wide settings the backend relies on (raised dynamo limits, cuDNN autotuning)."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), RECOMPILE_LIMIT))
    if hasattr(torch._dynamo.config, "accumulated_recompile_limit"):
        torch._dynamo.config.accumulated_recompile_limit = max(
            torch._dynamo.config.accumulated_recompile_limit, RECOMPILE_LIMIT
        )
    if options.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True


def make_forward(module: torch.nn.Module, options: TorchOptions) -> Forward:
    """``module`` compiled per ``options`` (``eager``: the module itself)."""
    configure_torch(options)
    if options.compile == "eager":
        return module
    inductor: dict[str, Any] = {"triton.cudagraphs": False, "freezing": False}
    if options.compile == "max-autotune":
        inductor["max_autotune"] = True
    if options.conv_1x1_as_mm:
        inductor["conv_1x1_as_mm"] = True
    if options.coordinate_descent:
        inductor["coordinate_descent_tuning"] = True
    dynamic = None if options.shapes == "dynamic" else False
    return torch.compile(module, dynamic=dynamic, options=inductor)


@dataclass(frozen=True)
class WarmReport:
    seconds_per_bucket: dict[int, float]
    cache: dict[str, int]
    """Compile-cache hits, misses and bypasses (Inductor's FX graph cache, AOTAutograd's cache)."""


def cache_counters() -> dict[str, int]:
    """PyTorch's process-wide compile-cache counters, flattened (``inductor.fxgraph_cache_hit``...)."""
    from torch._dynamo.utils import counters

    found = {}
    for group in ("inductor", "aot_autograd"):
        for name, value in counters[group].items():
            if "cache" in name:
                found[f"{group}.{name}"] = int(value)
    return found


def compile_buckets(
    forward: Forward,
    specs: Sequence[TensorSpec],
    shapes: Sequence[tuple[int, ...]],
    buckets: Sequence[int | None],
    device: torch.device,
    *,
    dynamic_batch: bool = False,
) -> WarmReport:
    """Call ``forward`` once per bucket (this is when ``torch.compile`` compiles), largest first."""
    seconds: dict[int, float] = {}
    before = cache_counters()
    for rows in sorted(buckets, key=lambda b: -(b or 0)):
        inputs = sample_inputs(specs, shapes, rows, device)
        if dynamic_batch and rows is not None and rows > 1:
            for tensor in inputs:
                torch._dynamo.mark_dynamic(tensor, 0)
        started = time.perf_counter()
        with torch.no_grad():
            forward(*inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[rows or 0] = round(time.perf_counter() - started, 3)
    after = cache_counters()
    return WarmReport(seconds, {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})


@contextlib.contextmanager
def recording_artifacts() -> Iterator[list[bytes]]:
    """Collect PyTorch's compile artifacts of the compiles inside the block (one bytes object in the
    yielded list afterwards; empty when nothing was compiled)."""
    from torch.compiler._cache import CacheArtifactManager

    found: list[bytes] = []
    fresh = getattr(CacheArtifactManager, "with_fresh_cache", None)
    with fresh() if fresh is not None else contextlib.nullcontext():
        yield found
        saved = torch.compiler.save_cache_artifacts()
        if saved is not None:
            found.append(saved[0])


def load_artifacts(data: bytes) -> int:
    """Hot-load compile artifacts; the number of entries written into the local caches."""
    info = torch.compiler.load_cache_artifacts(data)
    if info is None:
        log.warning("compile artifacts could not be read; this load compiles from scratch")
        return 0
    return sum(len(v) for v in info.artifacts.values())
