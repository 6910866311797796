"""The ``kiln`` command: a thin shell over the library. One module per subcommand."""

from __future__ import annotations

import typer

from kiln import __version__
from kiln.cli._shell import configure_logging
from kiln.cli.bench import bench
from kiln.cli.build import build_command
from kiln.cli.cache import app as cache_app
from kiln.cli.demo import demo_command
from kiln.cli.demo_online import online_command
from kiln.cli.gate import gate_command
from kiln.cli.repo import app as repo_app
from kiln.cli.serve import serve_command
from kiln.cli.train import train_command
from kiln.cli.usage import usage_command

app = typer.Typer(
    name="kiln",
    help="Build inference engines from trained models, cache them, and serve them with hot swap.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)


@app.callback()
def setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log kiln's steps to stderr.")) -> None:
    """Build inference engines from trained models, cache them, and serve them with hot swap."""
    configure_logging(verbose=verbose)


demo_app = typer.Typer(
    name="demo",
    add_completion=False,
    rich_markup_mode="markdown",
    help="The main demo, or `kiln demo online`.",
)
demo_app.callback(invoke_without_command=True)(demo_command)
demo_app.command("online")(online_command)

app.command("build")(build_command)
app.add_typer(demo_app, name="demo")
app.add_typer(cache_app, name="cache")
app.command("serve")(serve_command)
app.add_typer(repo_app, name="repo")
app.command("usage")(usage_command)
app.command("train")(train_command)
app.command("bench")(bench)
app.command("gate")(gate_command)


@app.command()
def version() -> None:
    """Print kiln's version."""
    typer.echo(__version__)


def main() -> None:
    app()
