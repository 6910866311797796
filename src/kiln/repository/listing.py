"""``kiln repo ls``: every model and version of a repository and its state, from the files alone.

A version is

* ``ready``: complete by the repository's rule (``READY`` marker, or renamed into place; see
  :mod:`kiln.repository.scan`), its model's ``config.yaml`` parses, and ``model.onnx`` passes
  :func:`kiln.model.load.load_model`: a server would build and try to serve it;
* ``incomplete``: a writer is not done (no ``model.onnx`` yet, or waiting for its ``READY`` file);
* ``invalid``: its model's ``config.yaml`` or its ``model.onnx`` is refused (the reason says how).

A model folder without version folders is listed once with version ``""`` and state ``incomplete``.
A running server's view (built, loaded, failed) is its repository index instead (``--url``).

:func:`plan_listing` decides from what was read (pure); :func:`list_repository` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from kiln.errors import ConfigError, KilnError, describe
from kiln.repository.config import parse_model_config
from kiln.repository.layout import CONFIG_FILE, MODEL_FILE
from kiln.repository.scan import RepoFolder, read_repository, settle

FileState: TypeAlias = Literal["ready", "incomplete", "invalid"]
ModelCheck = Callable[[Path], str | None]
"""Checks one ``model.onnx``: None when it is a valid model, else why not."""


@dataclass(frozen=True, slots=True)
class VersionListing:
    """One row of ``kiln repo ls``. ``state``: a :data:`FileState` from the files, or the server's
    state (READY, LOADING, FAILED, UNAVAILABLE...) when listed from a running server."""

    model: str
    version: str
    state: str
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def config_problem(text: str | None, where: str) -> str | None:
    try:
        parse_model_config(text, where=where)
    except ConfigError as error:
        return str(error)
    return None


def plan_listing(
    folder: RepoFolder, model_problems: Mapping[tuple[str, str], str | None]
) -> list[VersionListing]:
    """The rows for ``folder``; ``model_problems[(model, version)]``: what is wrong with that
    complete version's ``model.onnx`` (None: nothing). Versions missing there are not checked."""
    trusted = frozenset(model.name for model in folder.models)
    scan = settle(None, folder, now_s=0.0, settle_s=0.0, trusted=trusted)
    rows: list[VersionListing] = []
    for model in folder.models:
        where = f"{model.name}/{CONFIG_FILE}"
        bad_config = model.config_error or config_problem(model.config_text, where)
        if not model.versions:
            rows.append(VersionListing(model.name, "", "incomplete", "no version folders"))
        for version, state in scan.models[model.name].versions.items():
            if bad_config is not None:
                rows.append(VersionListing(model.name, version, "invalid", bad_config))
            elif not state.complete:
                reason = state.reason.removeprefix("incomplete: ")
                rows.append(VersionListing(model.name, version, "incomplete", reason))
            elif (problem := model_problems.get((model.name, version))) is not None:
                rows.append(VersionListing(model.name, version, "invalid", problem))
            else:
                rows.append(VersionListing(model.name, version, "ready"))
    return rows


def check_model_file(path: Path) -> str | None:
    """None when ``path`` loads as a valid model (:func:`kiln.model.load.load_model`), else why not."""
    from kiln.model.load import load_model  # noqa: PLC0415 (onnx loads only when models are checked)

    try:
        load_model(path)
    except KilnError as error:
        return str(error)
    return None


def list_repository(root: Path, *, check_model: ModelCheck | None = check_model_file) -> list[VersionListing]:
    """Read the repository at ``root`` and list it (``check_model``: None skips the model checks).
    ``ConfigError`` when ``root`` is not a folder."""
    if not root.is_dir():
        raise ConfigError(
            describe("the model repository is not a folder", seen=str(root), fix="give a folder")
        )
    folder = read_repository(root)
    problems: dict[tuple[str, str], str | None] = {}
    if check_model is not None:
        for model in folder.models:
            for version in model.versions:
                if version.has_model:
                    problems[model.name, version.version] = check_model(
                        root / model.name / version.version / MODEL_FILE
                    )
    return plan_listing(folder, problems)


def list_served(url: str, *, api_key: str | None = None, timeout_s: float = 10.0) -> list[VersionListing]:
    """A running server's repository index (``POST {url}/v2/repository/index``), as rows.

    ``ConfigError`` for a URL that is not http(s) or a key the server refuses; ``KilnError`` when
    the server cannot be reached or answers with something else."""
    import httpx  # noqa: PLC0415 (only for --url)

    base = url if "://" in url else f"http://{url}"
    if not base.startswith(("http://", "https://")):
        raise ConfigError(describe("not an HTTP URL", seen=url, fix="e.g. http://127.0.0.1:8000"))
    headers = {"x-api-key": api_key} if api_key else {}
    try:
        reply = httpx.post(
            f"{base.rstrip('/')}/v2/repository/index", json={}, headers=headers, timeout=timeout_s
        )
    except httpx.HTTPError as error:
        raise KilnError(
            describe(
                f"cannot reach the server at {base}",
                seen=f"{type(error).__name__}: {error}",
                fix="check the URL and that kiln serve runs",
            )
        ) from None
    if reply.status_code == 401:
        raise ConfigError(describe("the server refused the API key", seen=reply.text, fix="pass --api-key"))
    if reply.status_code != 200:
        raise KilnError(describe(f"the server answered {reply.status_code}", seen=reply.text[:200]))
    return [
        VersionListing(str(e["name"]), str(e.get("version", "")), str(e["state"]), str(e.get("reason", "")))
        for e in reply.json()
    ]
