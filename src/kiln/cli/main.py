"""The ``kiln`` command: a thin shell over the library. One module per subcommand."""

from __future__ import annotations

import typer

from kiln import __version__

app = typer.Typer(
    name="kiln",
    help="Build inference engines from trained models, cache them, and serve them with hot swap.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print kiln's version."""
    typer.echo(__version__)


def main() -> None:
    app()
