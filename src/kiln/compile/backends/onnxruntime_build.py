"""Writing the optimized engine file: ONNX Runtime's full graph optimization for this CPU, saved.

The engine file is the graph ONNX Runtime itself produces at ``ORT_ENABLE_ALL`` (fusions, constant
folding, NCHWc layouts for this ISA), saved through ``optimized_model_filepath`` as ``.onnx``:
the ``.ort`` format measured slower both to write (0.055-0.161 s vs 0.037-0.110 s) and to load
(0.020-0.060 s vs 0.017-0.040 s) for 17-47 MB models, at the same size.

Models whose weights pass ``inline_limit_bytes`` (protobuf cannot serialize 2 GiB) are written
with their weights in a side file, tensor by tensor, without copying the model in memory, and the
engine is saved the same way: ``engine.onnx`` plus ``engine.onnx.data``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.compile.backends.graph_cost import without_initializers
from kiln.compile.backends.onnxruntime_session import EXTERNAL_DATA_MIN_BYTES, build_options
from kiln.errors import BuildError, describe

if TYPE_CHECKING:
    import onnx
    import onnxruntime

ENGINE_FILE = "engine.onnx"
ENGINE_DATA_FILE = "engine.onnx.data"
INLINE_LIMIT_BYTES = 1536 * 1024**2
"""Past this many bytes of weights, models and engines are written with external data (protobuf's
hard limit is 2 GiB; the margin covers the graph and layout copies the optimizer adds)."""


@dataclass(frozen=True, slots=True)
class OptimizedEngine:
    files: tuple[str, ...]
    external_data: bool
    seconds: float


def weight_bytes(model: onnx.ModelProto) -> int:
    """Serialized size of the model's initializers."""
    return sum(t.ByteSize() for t in model.graph.initializer)


def write_optimized(
    model: onnx.ModelProto,
    out_dir: Path,
    workdir: Path,
    *,
    inline_limit_bytes: int = INLINE_LIMIT_BYTES,
    disabled_fusions: tuple[str, ...] = (),
) -> OptimizedEngine:
    """Optimize ``model`` for this CPU and save it as ``out_dir/engine.onnx`` (+ ``.data``),
    leaving out the ONNX Runtime optimizers named in ``disabled_fusions``.

    ``BuildError`` naming ONNX Runtime's complaint when it cannot load or optimize the model;
    nothing is left in ``out_dir`` then.
    """
    external = weight_bytes(model) > inline_limit_bytes
    engine_path = out_dir / ENGINE_FILE
    options = build_options(str(engine_path), ENGINE_DATA_FILE if external else None)
    started = time.perf_counter()
    try:
        if external:
            source_path = workdir / "model.onnx"
            write_external(model, source_path, "model.onnx.data")
            optimize_with(str(source_path), options, disabled_fusions)
        else:
            optimize_with(model.SerializeToString(), options, disabled_fusions)
    except Exception as exc:
        for name in (ENGINE_FILE, ENGINE_DATA_FILE):
            (out_dir / name).unlink(missing_ok=True)
        raise BuildError(
            describe(
                "ONNX Runtime could not optimize the model",
                seen=_first_line(exc),
                fix="check the model with `onnx.checker` and that its IR version/opset are supported "
                "by the installed onnxruntime",
            )
        ) from exc
    if not engine_path.is_file():
        raise BuildError(f"ONNX Runtime did not write the optimized model to {engine_path.name}")
    files = (ENGINE_FILE, ENGINE_DATA_FILE) if (out_dir / ENGINE_DATA_FILE).is_file() else (ENGINE_FILE,)
    return OptimizedEngine(files, external, time.perf_counter() - started)


def optimize_with(
    model: str | bytes, options: onnxruntime.SessionOptions, disabled_fusions: tuple[str, ...]
) -> None:
    """Open a session on ``model`` (a path or serialized bytes) with ``options`` (``build_options``:
    the optimized graph is saved where they say), leaving out ``disabled_fusions``."""
    import onnxruntime as ort

    extra = {"disabled_optimizers": list(disabled_fusions)} if disabled_fusions else {}
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"], **extra)


def write_external(model: onnx.ModelProto, path: Path, data_name: str) -> None:
    """Save ``model`` to ``path`` with initializers of ``EXTERNAL_DATA_MIN_BYTES`` or more in
    ``data_name`` beside it. ``model`` is not modified; one tensor at a time is copied."""
    import onnx
    from onnx import numpy_helper

    skeleton = without_initializers(model)
    with (path.parent / data_name).open("wb") as data:
        for tensor in model.graph.initializer:
            if tensor.ByteSize() < EXTERNAL_DATA_MIN_BYTES or tensor.data_type == onnx.TensorProto.STRING:
                skeleton.graph.initializer.append(tensor)
                continue
            raw = tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()
            offset = data.tell()
            data.write(raw)
            stub = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
            stub.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", offset), ("length", len(raw))):
                entry = stub.external_data.add()
                entry.key, entry.value = key, str(value)
            skeleton.graph.initializer.append(stub)
    path.write_bytes(skeleton.SerializeToString())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
