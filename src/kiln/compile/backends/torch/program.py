"""An ``ExportedProgram`` made ready to compile: flat tensor calls, lower precision, layout.

``ProgramModule`` wraps ``program.module()`` so that it is called like a converted ONNX graph:
flat tensors in (the program's user inputs in order), a tuple of tensors out. Lower precision is a
pass over the FX graph:

* float parameters and buffers are cast to the compute dtype, except those used only by kept nodes;
* ops that create float32 tensors (``dtype=torch.float32`` arguments: casts, ``full``, ``arange``)
  create the compute dtype instead;
* kept nodes (their ``nn_module_stack`` holds a module path in ``keep_fp32_nodes`` or a module class
  in ``keep_fp32_op_types``, or their aten op name is in ``keep_fp32_op_types``) get float32 inputs
  and cast their float outputs back;
* float inputs are cast on entry, outputs are returned in the dtypes the program declares.

Constants baked into the graph keep their values: a program that masks with ``finfo(float32).min``
overflows in float16 (use ``bf16`` for such models; the warm-up check catches NaN/Inf).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.fx
from torch.utils import _pytree as pytree

from kiln.compile.backends.torch.exported import read_program
from kiln.types import TensorSpec

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class ProgramModule(torch.nn.Module):
    """``program.module()`` behind a flat-tensor call; see the module docstring."""

    def __init__(
        self,
        module: torch.nn.Module,
        in_spec: Any,
        outputs: Sequence[torch.dtype],
        *,
        float_dtype: torch.dtype,
        channels_last: bool,
    ) -> None:
        super().__init__()
        self.program = module
        self._in_spec = in_spec
        self._output_dtypes = tuple(outputs)
        self.float_dtype = float_dtype
        self.channels_last = channels_last

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat = [self._enter(a) for a in args]
        call_args, call_kwargs = pytree.tree_unflatten(flat, self._in_spec)
        result = self.program(*call_args, **call_kwargs)
        leaves = pytree.tree_leaves(result)
        return tuple(
            leaf.to(dtype).contiguous() for leaf, dtype in zip(leaves, self._output_dtypes, strict=True)
        )

    def _enter(self, value: torch.Tensor) -> torch.Tensor:
        if value.dtype == torch.float32 and self.float_dtype != torch.float32:
            value = value.to(self.float_dtype)
        if self.channels_last and value.dim() == 4 and value.is_floating_point():
            value = value.contiguous(memory_format=torch.channels_last)
        return value


def program_module(
    path: Any,
    outputs: Sequence[TensorSpec],
    *,
    float_dtype: torch.dtype = torch.float32,
    keep_fp32_nodes: Iterable[str] = (),
    keep_fp32_op_types: Iterable[str] = (),
    channels_last: bool = False,
    cudnn_attention: bool = False,
) -> ProgramModule:
    """Read the program at ``path`` and prepare it (see the module docstring)."""
    program = read_program(path)
    module = program.module()
    if float_dtype != torch.float32:
        lower_precision(module, float_dtype, tuple(keep_fp32_nodes), tuple(keep_fp32_op_types))
    if cudnn_attention:
        use_cudnn_attention(module)
    if channels_last:
        _conv_weights_channels_last(module)
    dtypes = [_torch_dtype(spec) for spec in outputs]
    return ProgramModule(
        module, program.call_spec.in_spec, dtypes, float_dtype=float_dtype, channels_last=channels_last
    )


def cudnn_attention(  # noqa: PLR0917 (the FX graph calls it with aten's positional arguments)
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``scaled_dot_product_attention`` on cuDNN's kernel (fp16/bf16 on CUDA, no dropout, no GQA);
    anything else goes to PyTorch's own choice. A boolean mask becomes an additive bias."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if not query.is_cuda or query.dtype not in (torch.float16, torch.bfloat16) or dropout_p or enable_gqa:
        return sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
    bias = attn_mask
    if bias is not None:
        if bias.dtype == torch.bool:
            low = torch.finfo(query.dtype).min
            bias = torch.zeros(bias.shape, dtype=query.dtype, device=query.device).masked_fill(~bias, low)
        bias = bias.to(query.dtype).expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    out = torch.ops.aten._scaled_dot_product_cudnn_attention(
        query, key, value, bias, False, 0.0, is_causal, False, scale=scale
    )
    return out[0]  # type: ignore[no-any-return]


def use_cudnn_attention(module: torch.fx.GraphModule) -> int:
    """Point every ``aten.scaled_dot_product_attention`` call of ``module`` at :func:`cudnn_attention`;
    returns how many calls were changed."""
    changed = 0
    for node in module.graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.scaled_dot_product_attention.default:
            node.target = cudnn_attention
            changed += 1
    if changed:
        module.recompile()
    return changed


def _torch_dtype(spec: TensorSpec) -> torch.dtype:
    names = {"FP32": torch.float32, "FP16": torch.float16, "BF16": torch.bfloat16, "FP64": torch.float64}
    return names.get(spec.datatype) or getattr(torch, str(spec.dtype))


def _is_kept(node: torch.fx.Node, paths: tuple[str, ...], types: tuple[str, ...]) -> bool:
    target = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    if target in types:
        return True
    stack = node.meta.get("nn_module_stack") or {}
    for path, kind in stack.values():
        name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        if name.rsplit(".", 1)[-1] in types or any(
            str(path) == p or str(path).startswith(p + ".") for p in paths
        ):
            return True
    return False


def _is_float(node: Any) -> bool:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return isinstance(value, torch.Tensor) and value.dtype in _FLOATS


def lower_precision(
    module: torch.fx.GraphModule, dtype: torch.dtype, paths: tuple[str, ...], types: tuple[str, ...]
) -> None:
    """Rewrite ``module`` in place to compute in ``dtype``; see the module docstring."""
    graph = module.graph
    kept = {n for n in graph.nodes if n.op == "call_function" and _is_kept(n, paths, types)}
    module.to(dtype)
    for node in graph.nodes:
        if node.op == "get_attr" and node.users and all(u in kept for u in node.users):
            _set_attr(module, str(node.target), _get_attr(module, str(node.target)).float())
        elif node.op == "call_function" and node not in kept and node.kwargs.get("dtype") == torch.float32:
            node.update_kwarg("dtype", dtype)
    for node in kept:
        for arg in node.all_input_nodes:
            if _is_float(arg):
                with graph.inserting_before(node):
                    up = graph.call_method("to", (arg, torch.float32))
                node.replace_input_with(arg, up)
        if _is_float(node):
            with graph.inserting_after(node):
                down = graph.call_method("to", (node, dtype))
            node.replace_all_uses_with(down, delete_user_cb=lambda user, down=down: user is not down)
    graph.lint()
    module.recompile()


def _get_attr(module: torch.nn.Module, target: str) -> torch.Tensor:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value  # type: ignore[no-any-return]


def _set_attr(module: torch.nn.Module, target: str, tensor: torch.Tensor) -> None:
    owner_path, _, name = target.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    if isinstance(getattr(owner, name), torch.nn.Parameter):
        setattr(owner, name, torch.nn.Parameter(tensor, requires_grad=False))
    else:
        setattr(owner, name, tensor)


def _conv_weights_channels_last(module: torch.fx.GraphModule) -> None:
    graph = module.graph
    for node in graph.nodes:
        if node.op != "call_function" or not str(node.target).startswith(("aten.conv", "aten.convolution")):
            continue
        weight = node.args[1] if len(node.args) > 1 else None
        if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
            tensor = _get_attr(module, str(weight.target))
            if tensor.dim() == 4:
                _set_attr(module, str(weight.target), tensor.contiguous(memory_format=torch.channels_last))
