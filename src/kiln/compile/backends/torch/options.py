"""The torch backend's build options (``BuildSpec.backend_options``) and batch buckets.

Options are strings in the spec (they are part of the cache key):

| option | values | default |
|---|---|---|
| ``buckets`` | batch sizes, e.g. ``1,8,32,128`` | powers of two up to ``max_batch_size``, and it |
| ``compile`` | ``inductor``, ``max-autotune``, ``eager`` | ``inductor`` |
| ``shapes`` | ``static`` (a compiled graph per bucket), ``dynamic`` (one, dynamic batch) | ``static`` |
| ``cuda_graphs`` | ``on``, ``off`` | ``on`` (CUDA only) |
| ``channels_last`` | ``auto`` (on for models with 2-D convolutions), ``on``, ``off`` | ``auto`` |
| ``cudnn_benchmark`` | ``on``, ``off`` | ``on`` |
| ``conv_1x1_as_mm`` | ``on``, ``off`` (Inductor lowers 1x1 convolutions to matrix products) | ``off`` |
| ``conv_fusion`` | ``off``, ``cudnn`` (see below; needs ``compile=eager``) | ``off`` |
| ``attention`` | ``auto``, ``cudnn`` (see below) | ``auto`` |
| ``tuning`` | ``default``, ``coordinate-descent`` (Inductor tunes its kernels' launches) | ``default`` |

``conv_fusion=cudnn``: an ONNX ``Conv`` whose only user is a ``Relu``, or an ``Add`` whose only user
is a ``Relu``, runs as one cuDNN fused kernel (convolution + bias + ReLU, or + residual + ReLU) for
fp16/bf16 2-D convolutions on CUDA; elsewhere the same step runs unfused. ``attention=cudnn``: a
``.pt2`` program's ``scaled_dot_product_attention`` calls cuDNN's attention kernel (fp16/bf16 on
CUDA, no dropout); elsewhere PyTorch's own choice.

Parsing is pure; a bad value is a ``BuildError`` naming the option, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from kiln.errors import BuildError, describe

CompileMode = Literal["inductor", "max-autotune", "eager"]
Shapes = Literal["static", "dynamic"]
Switch = Literal["on", "off", "auto"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "compile": ("inductor", "max-autotune", "eager"),
    "shapes": ("static", "dynamic"),
    "cuda_graphs": ("on", "off"),
    "channels_last": ("auto", "on", "off"),
    "cudnn_benchmark": ("on", "off"),
    "conv_1x1_as_mm": ("on", "off"),
    "conv_fusion": ("off", "cudnn"),
    "attention": ("auto", "cudnn"),
    "tuning": ("default", "coordinate-descent"),
}
KNOWN_OPTIONS: tuple[str, ...] = ("buckets", *_CHOICES)
MAX_BUCKETS = 32


@dataclass(frozen=True, slots=True)
class TorchOptions:
    """Parsed backend options; ``buckets`` sorted, distinct, within ``1..max_batch_size``."""

    buckets: tuple[int, ...]
    compile: CompileMode = "inductor"
    shapes: Shapes = "static"
    cuda_graphs: bool = True
    channels_last: Switch = "auto"
    cudnn_benchmark: bool = True
    conv_1x1_as_mm: bool = False
    conv_fusion: bool = False
    attention: Literal["auto", "cudnn"] = "auto"
    coordinate_descent: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "buckets": list(self.buckets),
            "compile": self.compile,
            "shapes": self.shapes,
            "cuda_graphs": self.cuda_graphs,
            "channels_last": self.channels_last,
            "cudnn_benchmark": self.cudnn_benchmark,
            "conv_1x1_as_mm": self.conv_1x1_as_mm,
            "conv_fusion": self.conv_fusion,
            "attention": self.attention,
            "coordinate_descent": self.coordinate_descent,
        }


def default_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two up to ``max_batch_size``, plus ``max_batch_size``: padding wastes < 2x."""
    sizes = {max_batch_size}
    size = 1
    while size < max_batch_size:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


def parse_buckets(text: str, max_batch_size: int) -> tuple[int, ...]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise BuildError(
            describe("backend option buckets must be batch sizes", seen=text, fix="e.g. buckets=1,8,32")
        ) from None
    if not sizes or sizes[0] < 1 or sizes[-1] > max_batch_size or len(sizes) > MAX_BUCKETS:
        raise BuildError(
            describe(
                f"backend option buckets must hold 1 to {MAX_BUCKETS} sizes in 1..{max_batch_size} "
                "(max_batch_size)",
                seen=text,
                fix=f"e.g. buckets=1,8,{max_batch_size}",
            )
        )
    if sizes[-1] != max_batch_size:
        sizes.append(max_batch_size)
    return tuple(sizes)


def parse_options(options: Mapping[str, str], max_batch_size: int) -> TorchOptions:
    """``TorchOptions`` from ``BuildSpec.backend_options``; ``BuildError`` for unknown names or values."""
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        raise BuildError(
            describe("unknown torch backend option", seen=unknown, fix=f"use {', '.join(KNOWN_OPTIONS)}")
        )
    for name, allowed in _CHOICES.items():
        if name in options and options[name] not in allowed:
            raise BuildError(
                describe(
                    f"torch backend option {name}", seen=options[name], fix=f"use one of {', '.join(allowed)}"
                )
            )
    if options.get("conv_fusion", "off") == "cudnn" and options.get("compile", "inductor") != "eager":
        raise BuildError(
            describe(
                "torch backend option conv_fusion=cudnn runs cuDNN's fused kernels, which Inductor cannot "
                "trace",
                seen=f"compile={options.get('compile', 'inductor')}",
                fix="add compile=eager (the engine still captures a CUDA graph per bucket)",
            )
        )
    text = options.get("buckets")
    buckets = parse_buckets(text, max_batch_size) if text else default_buckets(max_batch_size)
    return TorchOptions(
        buckets=buckets,
        compile=options.get("compile", "inductor"),  # type: ignore[arg-type]
        shapes=options.get("shapes", "static"),  # type: ignore[arg-type]
        cuda_graphs=options.get("cuda_graphs", "on") == "on",
        channels_last=options.get("channels_last", "auto"),  # type: ignore[arg-type]
        cudnn_benchmark=options.get("cudnn_benchmark", "on") == "on",
        conv_1x1_as_mm=options.get("conv_1x1_as_mm", "off") == "on",
        conv_fusion=options.get("conv_fusion", "off") == "cudnn",
        attention=options.get("attention", "auto"),  # type: ignore[arg-type]
        coordinate_descent=options.get("tuning", "default") == "coordinate-descent",
    )


def pick_bucket(rows: int, buckets: tuple[int, ...]) -> int | None:
    """The smallest bucket holding ``rows``; ``None`` when ``rows`` exceeds every bucket."""
    return next((b for b in buckets if b >= rows), None)
