"""What every kiln command shares: exit codes from kiln's errors, and a progress bar.

Exit codes: 0 ok; 2 bad input, something the user must fix (an option, a model file, samples, an
accuracy bound); 1 anything else (a failed build, a busy cache, a bug).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

import pydantic
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from kiln.compile.backends.base import Progress as ProgressFn
from kiln.errors import AccuracyError, ConfigError, InvalidInput, KilnError, ModelError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2

BAD_INPUT: tuple[type[BaseException], ...] = (
    ConfigError,
    ModelError,
    AccuracyError,
    InvalidInput,
    pydantic.ValidationError,
)
"""Errors the user fixes: a wrong option, model file or sample folder, or an accuracy bound missed."""

T = TypeVar("T")
log = logging.getLogger("kiln.cli")


def exit_code(error: BaseException) -> int:
    """2 for bad input (``BAD_INPUT``), 1 for everything else."""
    return EXIT_BAD_INPUT if isinstance(error, BAD_INPUT) else EXIT_INTERNAL


def error_text(error: BaseException) -> str:
    """The message to print: kiln's own message, pydantic errors one per line with the option
    named as on the command line, and anything else marked as internal."""
    if isinstance(error, pydantic.ValidationError):
        lines = [f"invalid options: {error.error_count()} problem(s)"]
        for item in error.errors():
            option = "--" + "-".join(str(part) for part in item["loc"]).replace("_", "-")
            lines.append(f"  - {option}: {item['msg']} (seen: {item.get('input')!r})")
        return "\n".join(lines)
    if isinstance(error, KilnError):
        return str(error)
    return f"internal error: {type(error).__name__}: {error}"


def run_guarded(call: Callable[[], T], *, as_json: bool = False) -> T:
    """Run one library call; on failure print the error (and, with ``as_json``, a JSON error
    object on stdout) and exit with :func:`exit_code`."""
    try:
        return call()
    except (KilnError, pydantic.ValidationError, ValueError, OSError) as error:
        fail(error, as_json=as_json)
    except Exception as error:
        log.debug("internal error", exc_info=error)
        fail(error, as_json=as_json)


def fail(error: BaseException, *, as_json: bool = False) -> NoReturn:
    code = exit_code(error)
    if isinstance(error, ValueError) and not isinstance(error, pydantic.ValidationError):
        code = EXIT_BAD_INPUT  # a value refused by a spec's own checks (e.g. ShapeProfile)
        text = f"invalid value: {error}"
    else:
        text = error_text(error)
    Console(stderr=True).print(f"error: {text}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        body = {"ok": False, "exit_code": code, "error": {"type": type(error).__name__, "message": text}}
        typer.echo(json.dumps(body, indent=2))
    raise typer.Exit(code)


class ProgressBar:
    """A ``Progress`` callback drawing rich bars on stderr: one per stage with a total above 1
    (calibrating, the fp32 reference, checking accuracy), one status line for the other stages."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}
        self._status = progress.add_task("starting", total=None)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= 1:
            self._progress.update(self._status, description=stage)
            return
        task = self._tasks.get(stage)
        if task is None:
            task = self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(task, completed=done, total=total)


@contextmanager
def progress_bar(*, enabled: bool = True) -> Iterator[ProgressFn | None]:
    """A :class:`ProgressBar` while the block runs, removed afterwards; ``None`` when disabled or
    when stderr is not a terminal."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description:<22}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        yield ProgressBar(progress)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def _not_from_onnxruntime_root(record: logging.LogRecord) -> bool:
    """ONNX Runtime's quantizer logs notes to the root logger; kiln reports what matters itself."""
    return not (record.name == "root" and "onnxruntime" in record.pathname)


def configure_logging(*, verbose: bool = False) -> None:
    """kiln's warnings (and with ``verbose`` its debug log) on stderr; the handler is added once."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_not_from_onnxruntime_root)
        root.addHandler(handler)
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        logging.getLogger("kiln").setLevel(logging.DEBUG)
