"""The module an engine runs, made from a model source (build, refit) or an artifact (load), and
the artifact's files.

Artifact folder of a torch engine:

```text
graph.onnx          ONNX sources: the graph with its weights stripped (small shape constants kept)
program.pt2         .pt2 sources: the ExportedProgram as given
weights.pt          every weight in the engine's precision and layout (torch.save; read memory-mapped)
compile_cache.bin   PyTorch's compile artifacts for these buckets on this target
manifest.json       written by the engine cache
```
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kiln.compile.backends.torch.onnx_module import ConvertOptions, convert_onnx
from kiln.compile.backends.torch.options import TorchOptions
from kiln.compile.backends.torch.program import program_module
from kiln.errors import BuildError, CacheCorrupt, describe

if TYPE_CHECKING:
    import onnx

    from kiln.compile.spec import BuildSpec
    from kiln.model.source import ModelSource
    from kiln.types import TensorSpec

GRAPH_FILE = "graph.onnx"
PROGRAM_FILE = "program.pt2"
WEIGHTS_FILE = "weights.pt"
COMPILE_CACHE_FILE = "compile_cache.bin"
ENGINE_FILES = (GRAPH_FILE, PROGRAM_FILE, WEIGHTS_FILE, COMPILE_CACHE_FILE)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """What the spec asks of the module: compute dtype, kept nodes, layout, fused kernels."""

    float_dtype: torch.dtype
    keep_fp32_nodes: tuple[str, ...]
    keep_fp32_op_types: tuple[str, ...]
    channels_last: bool
    conv_fusion: bool = False
    cudnn_attention: bool = False


def precision_of(spec: BuildSpec, options: TorchOptions, has_conv2d: bool) -> Precision:
    """``BuildError`` for ``int8``: the torch backend computes in fp32, fp16 or bf16."""
    if spec.precision not in _DTYPES:
        raise BuildError(
            describe(
                f"the torch backend builds fp32, fp16 or bf16 engines, not {spec.precision}",
                fix="build int8 with the tensorrt or onnxruntime backend, or use fp16/bf16 here",
            )
        )
    layout = options.channels_last == "on" or (options.channels_last == "auto" and has_conv2d)
    return Precision(
        _DTYPES[spec.precision],
        spec.keep_fp32_nodes,
        spec.keep_fp32_op_types,
        layout,
        conv_fusion=options.conv_fusion,
        cudnn_attention=options.attention == "cudnn",
    )


def onnx_has_conv2d(model: onnx.ModelProto) -> bool:
    ranks = {t.name: len(t.dims) for t in model.graph.initializer}
    return any(
        n.op_type == "Conv" and len(n.input) > 1 and ranks.get(n.input[1]) == 4 for n in model.graph.node
    )


def module_from_onnx(
    model: onnx.ModelProto, precision: Precision, device: str, *, with_weights: bool
) -> torch.nn.Module:
    options = ConvertOptions(
        float_dtype=precision.float_dtype,
        keep_fp32_nodes=precision.keep_fp32_nodes,
        keep_fp32_op_types=precision.keep_fp32_op_types,
        channels_last=precision.channels_last,
        device=device,
        with_weights=with_weights,
        conv_fusion=precision.conv_fusion,
    )
    return convert_onnx(model, options)


def module_from_program(
    path: Path, outputs: tuple[TensorSpec, ...], precision: Precision, device: str
) -> torch.nn.Module:
    module = program_module(
        path,
        outputs,
        float_dtype=precision.float_dtype,
        keep_fp32_nodes=precision.keep_fp32_nodes,
        keep_fp32_op_types=precision.keep_fp32_op_types,
        channels_last=precision.channels_last,
        cudnn_attention=precision.cudnn_attention,
    )
    return module.to(device)


def program_has_conv2d(path: Path) -> bool:
    from kiln.compile.backends.torch.exported import read_program

    program = read_program(path)
    return any(
        n.op == "call_function"
        and str(n.target).startswith("aten.conv")
        and len(n.args) > 1
        and getattr(n.args[1], "meta", {}).get("val") is not None
        and n.args[1].meta["val"].dim() == 4
        for n in program.graph.nodes
    )


def source_module(source: ModelSource, precision: Precision, device: str) -> torch.nn.Module:
    """The module for a model source, weights included."""
    if source.format == "pt2":
        return module_from_program(source.path, source.outputs, precision, device)
    if source.model is None:
        raise BuildError(describe("ONNX source without a loaded model", seen=str(source.path)))
    return module_from_onnx(source.model, precision, device, with_weights=True)


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every weight's data removed (dims and types kept) except the small integer
    initializers that shape arithmetic reads."""
    import onnx

    from kiln.compile.backends.torch.onnx_graph import is_host_initializer

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in copy.graph.initializer:
        if not is_host_initializer(tensor):
            dims, data_type, name = list(tensor.dims), tensor.data_type, tensor.name
            tensor.Clear()
            tensor.name, tensor.data_type = name, data_type
            tensor.dims.extend(dims)
    return copy


def write_graph(source: ModelSource, out_dir: Path) -> str:
    """Write the graph file for ``source``; its name."""
    if source.format == "pt2":
        shutil.copyfile(source.path, out_dir / PROGRAM_FILE)
        return PROGRAM_FILE
    assert source.model is not None
    (out_dir / GRAPH_FILE).write_bytes(skeleton(source.model).SerializeToString())
    return GRAPH_FILE


def write_weights(module: torch.nn.Module, path: Path) -> int:
    """Save every weight (on the CPU, layout kept); the bytes written."""
    state = {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
    torch.save(state, path)
    return path.stat().st_size


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights saved by ``write_weights``, memory-mapped. ``CacheCorrupt`` when unreadable."""
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        raise CacheCorrupt(
            describe(
                "engine weights cannot be read", seen=f"{path.name}: {type(exc).__name__}", fix="rebuild"
            )
        ) from exc
    if not isinstance(state, dict):
        raise CacheCorrupt(describe("engine weights file holds no state dict", seen=path.name, fix="rebuild"))
    return state


def artifact_module(
    folder: Path, graph_file: str, outputs: tuple[TensorSpec, ...], precision: Precision, device: str
) -> torch.nn.Module:
    """The module of an artifact with *empty* weights (fill them with ``copy_weights``)."""
    if graph_file == PROGRAM_FILE:
        return module_from_program(folder / PROGRAM_FILE, outputs, precision, device)
    import onnx

    try:
        model = onnx.load_model_from_string((folder / GRAPH_FILE).read_bytes())
    except Exception as exc:
        raise CacheCorrupt(describe("engine graph cannot be read", seen=graph_file, fix="rebuild")) from exc
    return module_from_onnx(model, precision, device, with_weights=False)


def weight_mismatch(module: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> str | None:
    """Why ``weights`` do not fit ``module`` (other names, shapes or dtypes), or ``None``."""
    state = module.state_dict()
    if set(state) != set(weights):
        missing, extra = sorted(set(state) - set(weights)), sorted(set(weights) - set(state))
        return f"weight names differ (missing {missing[:5]}, unexpected {extra[:5]})"
    for name, tensor in state.items():
        other = weights[name]
        if tuple(other.shape) != tuple(tensor.shape) or other.dtype != tensor.dtype:
            seen = f"{tuple(other.shape)} {other.dtype}"
            return f"weight {name!r} is {seen}, expected {tuple(tensor.shape)} {tensor.dtype}"
    return None


def copy_weights(module: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy ``weights`` into the module's own storage (addresses unchanged: captured CUDA graphs
    and compiled code keep reading the same buffers)."""
    state = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, tensor in state.items():
            tensor.copy_(weights[name], non_blocking=True)
