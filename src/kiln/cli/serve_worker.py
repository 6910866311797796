"""One worker process of ``kiln serve REPO --workers N`` (started by the supervisor in
:mod:`kiln.server.workers`, never by hand): ``python -m kiln.cli.serve_worker`` with its spec as
JSON in ``$KILN_WORKER_SPEC``. Exit codes as ``kiln serve``: 0 drained, 1 internal, 2 bad input.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from kiln.cli._lines import say
from kiln.cli._shell import configure_logging
from kiln.errors import ConfigError, KilnError
from kiln.server.config import ServerConfig
from kiln.server.metrics_workers import WorkerPeers
from kiln.server.workers import SharedPorts, WorkerCommand

SPEC_ENV = "KILN_WORKER_SPEC"
PR_SET_PDEATHSIG = 1


def worker_command(
    repo: Path,
    config: ServerConfig,
    options: Mapping[str, object],
    *,
    ledger: Path,
    ports: SharedPorts,
    index: int,
) -> WorkerCommand:
    """The command line and environment of worker ``index`` serving ``repo`` on ``ports``."""
    shared = config.model_copy(update={"http_port": ports.http_port, "grpc_port": ports.grpc_port})
    spec = {
        "repo": str(repo),
        "config": shared.model_dump(mode="json"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
        "ledger": str(ledger),
        "worker": index,
        "num_workers": config.workers,
        "metrics_dir": None if ports.metrics_dir is None else str(ports.metrics_dir),
        "parent_pid": os.getpid(),
    }
    env = {**os.environ, SPEC_ENV: json.dumps(spec)}
    return WorkerCommand([sys.executable, "-m", "kiln.cli.serve_worker"], env)


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM this worker when the supervisor dies (Linux), so that no orphan keeps the ports."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def _peers(spec: Mapping[str, object]) -> WorkerPeers | None:
    folder = spec.get("metrics_dir")
    return None if folder is None else WorkerPeers(Path(str(folder)), int(str(spec["num_workers"])))


def main() -> int:
    from kiln.server.serve import serve_repository  # noqa: PLC0415 (the server stack)

    spec = json.loads(os.environ[SPEC_ENV])
    _die_with_parent(int(spec["parent_pid"]))
    # Ctrl-C reaches the whole process group; the supervisor forwards it as SIGTERM. Until the
    # server installs its own handlers, a SIGINT must not end the worker with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging()
    index = int(spec["worker"])
    options = dict(spec["options"])
    if options.get("cache_dir") is not None:
        options["cache_dir"] = Path(options["cache_dir"])

    def started(server: object) -> None:
        say(f"kiln worker {index} ready (pid {os.getpid()})")

    try:
        drained = serve_repository(
            Path(spec["repo"]),
            ServerConfig.model_validate(spec["config"]),
            ledger=Path(spec["ledger"]),
            repository=options,
            on_started=started,
            worker=index,
            peers=_peers(spec),
        )
    except ConfigError as error:
        say(f"error: kiln worker {index}: {error}", sys.stderr)
        return 2
    except KilnError as error:
        say(f"error: kiln worker {index}: {error}", sys.stderr)
        return 1
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(main())
