"""The per-model memory budget: refuse a version whose engines would push the model past it.

A model's resident versions (the active one, one loading, any kept for rollback) all hold memory
while a swap is under way, so the budget must cover them together: a zero-downtime swap of a model
whose engines use ``B`` bytes needs a budget of at least ``2B``. The check is a pure function; the
loader calls it twice, after the engines are loaded (their weights) and after the instances are
created and warmed up (their buffers and captured graphs), and fails the version with this message.
"""

from __future__ import annotations


def _gib(count: int) -> str:
    return f"{count / 1024**3:.2f} GiB ({count} bytes)"


def budget_problem(
    *, model: str, version: str, stage: str, new_bytes: int, resident_bytes: int, budget_bytes: int | None
) -> str | None:
    """Why loading ``version`` breaks the budget (``None``: it fits, or there is no budget).

    ``new_bytes`` is what the new version's engines report (``Engine.memory_bytes()``) at ``stage``;
    ``resident_bytes`` what the model's other resident versions hold.
    """
    if budget_bytes is None or new_bytes + resident_bytes <= budget_bytes:
        return None
    others = f" with {_gib(resident_bytes)} held by its other resident versions" if resident_bytes else ""
    return (
        f"memory budget exceeded: version {version} of {model!r} needs {_gib(new_bytes)} {stage}{others}, "
        f"{_gib(new_bytes + resident_bytes)} in all, over max_memory_bytes={budget_bytes}; raise "
        "max_memory_bytes (a hot swap holds two versions at once), lower num_instances or the engine's "
        "batch size, or unload another version first"
    )
