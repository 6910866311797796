"""``kiln repo ls|add``: look at a model repository and publish versions into it.

Exit codes: 0 ok; 2 bad input (not a folder, a bad name, an existing version, a config or model
file kiln refuses, a key the server refuses); 1 anything else (a failed write, an unreachable
server).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kiln.cli._shell import run_guarded

app = typer.Typer(
    name="repo",
    help="List a model repository's models and versions, and add versions to it.",
    no_args_is_help=True,
    add_completion=False,
)

Repo = Annotated[
    Path, typer.Argument(help="Model repository folder: `MODEL/config.yaml`, `MODEL/VERSION/model.onnx`.")
]


@app.command("ls")
def list_command(
    repo: Annotated[
        Path | None, typer.Argument(help="Model repository folder (leave out with --url).")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Ask a running kiln server (http://HOST:PORT) for its repository index."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="KILN_API_KEY", help="API key for --url. Env: KILN_API_KEY.")
    ] = None,
    no_model_check: Annotated[
        bool, typer.Option("--no-model-check", help="Do not load each model.onnx to check it.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for machines instead of a table.")
    ] = False,
) -> None:
    """List every model and version with its state: from the files, ready / incomplete / invalid
    with the reason; with --url, the running server's states (READY, LOADING, FAILED...)."""
    from kiln.repository.listing import VersionListing, check_model_file, list_repository, list_served  # noqa: PLC0415

    def run() -> list[VersionListing]:
        if url is not None:
            return list_served(url, api_key=api_key)
        if repo is None:
            from kiln.errors import ConfigError  # noqa: PLC0415

            raise ConfigError("give the repository folder, or --url of a running server")
        return list_repository(repo, check_model=None if no_model_check else check_model_file)

    rows = run_guarded(run, as_json=as_json)
    if as_json:
        typer.echo(json.dumps([row.to_json() for row in rows], indent=2))
        return
    table = [("MODEL", "VERSION", "STATE", "REASON")] + [
        (r.model, r.version or "-", r.state, " ".join(r.reason.split())) for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    for line in table:
        cells = "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        typer.echo(f"{cells}  {line[3]}".rstrip())


@app.command("add")
def add_command(
    repo: Repo,
    model: Annotated[str, typer.Argument(help="Model name (the folder under REPO).")],
    path: Annotated[Path, typer.Argument(help="The ONNX model file to publish.", dir_okay=False)],
    *,
    version: Annotated[
        int | None, typer.Option(help="Version number. Default: the next free one.", min=1)
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="config.yaml for the model (when it has none yet; checked first).", dir_okay=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Check PATH (kiln's model checks) and the model's config, then publish PATH as a new version,
    atomically: a server watching REPO sees the whole version or nothing."""
    from kiln.repository.add import add_version  # noqa: PLC0415

    added = run_guarded(
        lambda: add_version(
            repo, model, path, version=None if version is None else str(version), config_path=config
        ),
        as_json=as_json,
    )
    published = added.published
    if as_json:
        body = {
            "ok": True,
            "model": published.model,
            "version": published.version,
            "path": str(published.path),
            "config_written": added.config_written,
            "ops_checked": added.ops_checked,
        }
        typer.echo(json.dumps(body, indent=2))
        return
    typer.echo(f"published {published.model} version {published.version} ({published.path})")
    if added.config_written:
        typer.echo(f"wrote {repo / model / 'config.yaml'}")
    if not added.ops_checked:
        typer.echo("note: operator support not checked (the config's backend is not usable here)")
