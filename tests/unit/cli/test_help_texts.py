"""Every ``kiln`` command's ``--help`` shows its help texts whole.

The CLI renders help as Markdown (``rich_markup_mode="markdown"``), which drops whatever looks like
an HTML tag (``<model>/<version>/`` becomes ``//``) and turns ``*x*``, ``_x_`` or ``[x](y)`` into
formatting. Placeholders are written ``MODEL`` or in backticks instead; these tests render every
command's help and look for each paragraph of each help text in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from kiln.cli.main import app

_DECORATION = re.compile(r"\x1b\[[0-9;]*m|[│╭╮╰╯─]")


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, command)`` for ``command`` and every subcommand below it."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def _squash(text: str) -> str:
    return " ".join(text.split())


def _help_texts(command: Any) -> list[str]:
    """The command's own help and each parameter's, as written in the source."""
    texts = [command.help or ""]
    texts += [getattr(param, "help", None) or "" for param in command.params]
    return [text for text in texts if text.strip()]


def lost_help(cli: typer.Typer, path: tuple[str, ...], command: Any) -> list[str]:
    """Paragraphs of ``command``'s help texts that its rendered ``--help`` does not show; code
    spans count as their text (backticks are formatting)."""
    result = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "500", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    shown = _squash(_DECORATION.sub(" ", result.output))
    paragraphs = [p for text in _help_texts(command) for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [p for p in paragraphs if _squash(p.replace("`", "")) not in shown]


def test_every_command_is_visited() -> None:
    paths = {" ".join(path) for path, _ in _commands(typer.main.get_command(app))}
    assert {"build", "serve", "gate", "bench", "usage", "train", "version"} <= paths
    assert {"demo online", "cache ls", "cache rm", "cache gc", "repo ls", "repo add"} <= paths


def test_every_command_help_keeps_its_placeholders_and_text() -> None:
    lost = {
        " ".join(("kiln", *path)): missing
        for path, command in _commands(typer.main.get_command(app))
        if (missing := lost_help(app, path, command))
    }
    assert lost == {}


def test_a_placeholder_written_as_a_tag_is_found_lost() -> None:
    cli = typer.Typer(rich_markup_mode="markdown")

    @cli.command()
    def show(
        repo: str = typer.Argument(help="Folder: <model>/config.yaml, `MODEL/VERSION/model.onnx`."),
    ) -> None:
        """Show the *newest* version."""

    @cli.command()
    def other() -> None:
        """Another command, so that ``show`` is a subcommand."""

    command = typer.main.get_command(cli)
    lost = lost_help(cli, ("show",), command.commands["show"])  # type: ignore[attr-defined]
    assert lost == ["Show the *newest* version.", "Folder: <model>/config.yaml, `MODEL/VERSION/model.onnx`."]
