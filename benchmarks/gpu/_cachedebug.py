"""Opt-in (``KILN_BENCH_CACHE_DEBUG=1``): write the inputs of PyTorch's compile-cache keys (FX graph
cache, AOTAutograd cache) of the first graph a process compiles to ``fxkeys-<stage>.txt``, so that a
build and a later load can be compared line by line when the load misses the cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def install(out: Path, stage: str) -> None:
    from torch._functorch._aot_autograd import autograd_cache
    from torch._inductor import codecache

    path = out / f"fxkeys-{stage}.txt"
    seen: set[str] = set()

    def wrap(module: Any, name: str, label: str) -> None:
        original: Callable[..., Any] = getattr(module, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if label not in seen and isinstance(result, tuple) and len(result) == 2:
                seen.add(label)
                lines = result[1] if isinstance(result[1], list) else [str(result[1])]
                with path.open("a") as handle:
                    handle.write(f"=== {label} {result[0]}\n" + "\n".join(str(x) for x in lines) + "\n")
            return result

        setattr(module, name, wrapped)

    wrap(codecache, "compiled_fx_graph_hash", "FX")
    wrap(autograd_cache, "autograd_cache_key", "AOT")
