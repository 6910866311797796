"""The ``kiln`` command: a thin shell over the library. One module per subcommand."""

from __future__ import annotations

import typer

from kiln import __version__
from kiln.cli.bench import bench
from kiln.cli.cache import app as cache_app

app = typer.Typer(
    name="kiln",
    help="Build inference engines from trained models, cache them, and serve them with hot swap.",
    no_args_is_help=True,
    add_completion=False,
)

app.add_typer(cache_app, name="cache")
app.command("bench")(bench)


@app.command()
def version() -> None:
    """Print kiln's version."""
    typer.echo(__version__)


def main() -> None:
    app()
