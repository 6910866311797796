"""``kiln cache ls|rm|gc``: look at and tidy the engine cache.

Exit codes: 0 ok, 1 internal error (or the cache is busy), 2 bad input (unknown or ambiguous prefix,
bad size).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from kiln.cache.entry import CacheEntry
from kiln.cache.gc import GcReport, collect_garbage, parse_byte_size
from kiln.cache.remove import remove_entries
from kiln.cache.store import EngineStore
from kiln.errors import ConfigError, KilnError

app = typer.Typer(
    name="cache",
    help="List, remove and garbage-collect cached engines.",
    no_args_is_help=True,
    add_completion=False,
)

CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Engine cache folder. Default: $KILN_CACHE_DIR, else ~/.cache/kiln/engines.",
        file_okay=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of a table.")]
T = TypeVar("T")


def _guarded(call: Callable[[], T]) -> T:
    """Run one library call; map kiln's errors to exit codes 2 (bad input) and 1 (everything else)."""
    err = Console(stderr=True)
    try:
        return call()
    except ConfigError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KilnError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as error:
        err.print(
            f"internal error: {type(error).__name__}: {error}", markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None


@app.command("ls")
def list_command(cache_dir: CacheDir = None, as_json: AsJson = False) -> None:
    """List cached engines, least recently used first."""
    entries = _guarded(lambda: EngineStore(cache_dir).list_entries())
    if as_json:
        typer.echo(json.dumps([entry_json(e) for e in entries], indent=2))
        return
    table = Table(title=f"{len(entries)} cached engine(s)")
    for column in ("entry", "model", "precision", "target", "path", "size", "build s", "last used"):
        table.add_column(column, no_wrap=column in ("entry", "size"))
    for e in entries:
        row = entry_json(e)
        table.add_row(
            e.id,
            str(row["model"]),
            str(row["precision"]),
            str(row["target"]),
            str(row["build_path"]),
            human_bytes(e.size_bytes),
            "-" if row["build_seconds"] is None else f"{row['build_seconds']:.1f}",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.last_used)),
        )
    Console().print(table)


@app.command("rm")
def remove_command(
    key_prefix: Annotated[str, typer.Argument(help="Key prefix, or KEY/WEIGHTS prefix, as `ls` shows.")],
    cache_dir: CacheDir = None,
    wait_s: Annotated[float, typer.Option(help="How long to wait for a builder holding the key.")] = 30.0,
) -> None:
    """Remove the cached engine(s) of one key (or one KEY/WEIGHTS entry)."""
    removed = _guarded(lambda: remove_entries(EngineStore(cache_dir), key_prefix, lock_timeout_s=wait_s))
    for e in removed:
        typer.echo(f"removed {e.id} ({human_bytes(e.size_bytes)})")


@app.command("gc")
def gc_command(
    max_bytes: Annotated[
        str | None,
        typer.Option(help="Evict least recently used engines until the cache fits: 1073741824, 500MB, 2GiB."),
    ] = None,
    cache_dir: CacheDir = None,
    as_json: AsJson = False,
) -> None:
    """Delete leftover temporary folders and, with --max-bytes, evict engines to fit the budget."""

    def run() -> GcReport:
        budget = parse_byte_size(max_bytes) if max_bytes is not None else None
        return collect_garbage(EngineStore(cache_dir), budget)

    report = _guarded(run)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    for e in report.removed:
        typer.echo(f"evicted {e.id} ({human_bytes(e.size_bytes)})")
    for e in report.skipped_locked:
        typer.echo(f"kept {e.id}: locked by a builder")
    typer.echo(
        f"freed {human_bytes(report.freed_bytes + report.temp_freed_bytes)} "
        f"({len(report.removed)} engine(s), {len(report.temp_removed)} temporary folder(s)); "
        f"{human_bytes(report.remaining_bytes)} left"
    )


def entry_json(e: CacheEntry) -> dict[str, object]:
    m = e.manifest
    target = m.target if m else {}
    return {
        "id": e.id,
        "key": e.key,
        "weights_hash": e.weights_hash,
        "model": m.extra.get("model_name", "?") if m else "? (unreadable)",
        "precision": m.spec.get("precision", "?") if m else "?",
        "target": f"{target.get('device_kind', '?')}-{target.get('arch', '?')}".replace("_", ""),
        "build_path": m.build_path if m else "?",
        "size_bytes": e.size_bytes,
        "build_seconds": m.build_seconds if m else None,
        "last_used": e.last_used,
        "path": str(e.path),
        "problem": e.problem,
    }


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
