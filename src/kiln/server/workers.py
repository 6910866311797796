"""``kiln serve REPO --workers N``: one supervising process, N worker processes on the same ports.

The supervisor (this module, in the parent process) binds the HTTP and gRPC ports itself with
SO_REUSEPORT, without listening (so port 0 becomes one real port that every worker shares and the
port stays held while workers restart), then starts N workers. Each worker runs the whole server
(:func:`kiln.server.serve.serve_repository` with ``worker=i``): its own runtime, repository
watcher, engines, batching and metrics, listening on the shared ports with SO_REUSEPORT once its
models are ready; the kernel spreads new connections over the listening workers.

A worker that dies is started again after a backoff (:mod:`kiln.server.restarts`); a worker that
exits with code 2 (bad input: nothing a restart fixes) stops the whole server with code 2. On
SIGTERM or SIGINT the supervisor forwards SIGTERM to every worker, each stops admitting, drains
its in-flight requests and exits; the supervisor exits 0 when every worker exited 0.

Linux only (SO_REUSEPORT balancing connections between processes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln._clock import SYSTEM_CLOCK, Clock
from kiln.errors import ConfigError, describe
from kiln.metering import ledger_db
from kiln.server.auth import create_authenticator
from kiln.server.config import ServerConfig
from kiln.server.listeners import bind_socket, client_host
from kiln.server.restarts import BackoffConfig, plan_restart

STOP_GRACE_S = 15.0
"""Beyond ``drain_timeout_s``: how long a stopping worker may take to close before it is killed."""
EXIT_BAD_INPUT = 2

Event = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class WorkerCommand:
    """How to start one worker: its command line and its environment (secrets such as the admin
    token travel in the environment, which other users cannot read, not on the command line)."""

    argv: Sequence[str]
    env: Mapping[str, str]


CommandFor = Callable[[int], WorkerCommand]


def check_workers_supported(num_workers: int, platform: str = sys.platform) -> None:
    """``ConfigError`` for ``num_workers > 1`` where SO_REUSEPORT does not balance (not Linux)."""
    if num_workers > 1 and not platform.startswith("linux"):
        raise ConfigError(
            describe(
                f"--workers {num_workers} needs Linux (SO_REUSEPORT load balancing)",
                seen=f"platform {platform}",
                fix="use --workers 1 here, or run several kiln serve processes behind a load balancer",
            )
        )


@dataclass(frozen=True, slots=True)
class SharedPorts:
    """The ports every worker listens on (real numbers, even when 0 was asked for), and the folder
    where each worker serves its own metrics to the others (``kiln.server.metrics_workers``) and
    takes the repository/admin calls they forward (``kiln.server.workers_admin``)."""

    http_port: int
    grpc_port: int | None
    metrics_dir: Path | None = None


@contextlib.contextmanager
def reserve_ports(config: ServerConfig) -> Iterator[SharedPorts]:
    """Bind (without listening) the HTTP and gRPC ports with SO_REUSEPORT for as long as the block
    runs, so that the workers can bind the same ports and nobody else takes them meanwhile."""
    held: list[socket.socket] = []
    try:
        http = bind_socket(config.host, config.http_port, reuse_port=True)
        held.append(http)
        grpc_port = None
        if config.grpc_port is not None:
            grpc = bind_socket(config.host, config.grpc_port, reuse_port=True, what="gRPC")
            held.append(grpc)
            grpc_port = int(grpc.getsockname()[1])
        yield SharedPorts(int(http.getsockname()[1]), grpc_port)
    finally:
        for sock in held:
            sock.close()


def check_before_start(repo: Path, config: ServerConfig, ledger: Path) -> None:
    """What would make every worker exit with bad input, checked once in the supervisor: the
    repository folder, the keys file and admin token, the ledger (created here, so that the
    workers do not race to create it)."""
    if not repo.is_dir():
        raise ConfigError(
            describe("the model repository is not a folder", seen=str(repo), fix="give a folder")
        )
    create_authenticator(config.api_keys_file, config.admin_token)
    conn, _ = ledger_db.open_for_writing(ledger, None)
    conn.close()


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit code {code}"


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    failures: int = 0
    restart_at_s: float | None = None
    last_code: int | None = None


class Supervisor:
    """Starts ``num_workers`` processes (``command_for(i)``), restarts those that die, stops them
    all on SIGTERM/SIGINT. :meth:`run` returns the exit code: 0 when every worker drained and
    exited 0, 2 when a worker exited with bad input, 1 otherwise.

    ``stop_timeout_s``: after SIGTERM, how long workers may take before they are killed.
    ``on_event``: one line per start, death, restart and stop (the CLI prints them).
    """

    def __init__(
        self,
        command_for: CommandFor,
        num_workers: int,
        *,
        stop_timeout_s: float,
        on_event: Event,
        backoff: BackoffConfig | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.command_for = command_for
        self.workers = [_Worker(i) for i in range(num_workers)]
        self.stop_timeout_s = stop_timeout_s
        self.on_event = on_event
        self.backoff = backoff or BackoffConfig()
        self.clock = clock
        self._stop_deadline_s: float | None = None
        self._bad_input = False

    def run(self) -> int:
        with _signal_pipe() as wake:
            for worker in self.workers:
                self._start(worker)
            while not self._finished():
                select.select([wake], [], [], self._wait_s())
                if {signal.SIGTERM, signal.SIGINT} & _read_signals(wake):
                    self._stop("signal received")
                self._reap()
                self._restart_due()
                self._kill_overdue()
        if self._bad_input:
            return EXIT_BAD_INPUT
        return 0 if all(w.last_code == 0 for w in self.workers) else 1

    # -- steps ----------------------------------------------------------------------------------

    def _start(self, worker: _Worker) -> None:
        command = self.command_for(worker.index)
        worker.process = subprocess.Popen(list(command.argv), env=dict(command.env))
        worker.started_s = self.clock.now()
        worker.restart_at_s = None
        self.on_event(f"kiln worker {worker.index} started (pid {worker.process.pid})")

    def _reap(self) -> None:
        for worker in self.workers:
            if worker.process is None or (code := worker.process.poll()) is None:
                continue
            pid, worker.process, worker.last_code = worker.process.pid, None, code
            what = f"kiln worker {worker.index} (pid {pid}) exited: {describe_exit(code)}"
            if self._stop_deadline_s is not None:
                self.on_event(what)
            elif code == EXIT_BAD_INPUT:
                self.on_event(f"{what} (bad input; a restart would not fix it)")
                self._bad_input = True
                self._stop("a worker exited with bad input")
            else:
                plan = plan_restart(
                    started_s=worker.started_s,
                    died_s=self.clock.now(),
                    failures_before=worker.failures,
                    backoff=self.backoff,
                )
                worker.failures, worker.restart_at_s = plan.failures, self.clock.now() + plan.delay_s
                self.on_event(
                    f"{what}; restarting in {plan.delay_s:g} s ({plan.failures} failure(s) in a row)"
                )

    def _restart_due(self) -> None:
        if self._stop_deadline_s is not None:
            return
        for worker in self.workers:
            if worker.restart_at_s is not None and self.clock.now() >= worker.restart_at_s:
                self._start(worker)

    def _stop(self, why: str) -> None:
        if self._stop_deadline_s is not None:
            return
        self._stop_deadline_s = self.clock.now() + self.stop_timeout_s
        alive = [w for w in self.workers if w.process is not None]
        self.on_event(f"kiln stopping ({why}): SIGTERM to {len(alive)} worker(s), draining")
        for worker in self.workers:
            worker.restart_at_s = None
            if worker.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)

    def _kill_overdue(self) -> None:
        if self._stop_deadline_s is None or self.clock.now() < self._stop_deadline_s:
            return
        for worker in self.workers:
            if worker.process is not None:
                self.on_event(
                    f"kiln worker {worker.index} (pid {worker.process.pid}) did not stop within "
                    f"{self.stop_timeout_s:g} s; killing it"
                )
                worker.process.kill()
                worker.process.wait()
                worker.process, worker.last_code = None, -signal.SIGKILL

    def _finished(self) -> bool:
        return self._stop_deadline_s is not None and all(w.process is None for w in self.workers)

    def _wait_s(self) -> float:
        """Until the next restart or the stop deadline; at most 1 s (a safety net for missed wake-ups)."""
        due = [w.restart_at_s for w in self.workers if w.restart_at_s is not None]
        if self._stop_deadline_s is not None:
            due.append(self._stop_deadline_s)
        return max(0.0, min([self.clock.now() + 1.0, *due]) - self.clock.now())


@contextlib.contextmanager
def _signal_pipe() -> Iterator[int]:
    """A pipe the signal machinery writes signal numbers to (SIGTERM, SIGINT, SIGCHLD), so that
    one ``select`` wakes on a signal or a dead child; the previous handlers come back after."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    watched = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
    previous = {sig: signal.signal(sig, _noop) for sig in watched}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    try:
        yield read_fd
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(read_fd)
        os.close(write_fd)


def _noop(signum: int, frame: object) -> None:
    """A Python-level handler, so that the signal reaches the wake-up pipe."""


def _read_signals(fd: int) -> set[int]:
    seen: set[int] = set()
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 512):
            seen.update(chunk)
    return seen


def serve_workers(
    repo: Path,
    config: ServerConfig,
    command_for: Callable[[SharedPorts], CommandFor],
    *,
    ledger: Path,
    on_event: Event,
    backoff: BackoffConfig | None = None,
) -> int:
    """Check the inputs, hold the shared ports, and supervise ``config.workers`` workers until
    SIGTERM/SIGINT; returns the exit code (see :class:`Supervisor`). ``command_for(ports)(i)`` is
    the command line of worker ``i`` listening on ``ports``."""
    check_workers_supported(config.workers)
    check_before_start(repo, config, ledger)
    with reserve_ports(config) as reserved, tempfile.TemporaryDirectory(prefix="kiln-workers-") as folder:
        ports = dataclasses.replace(reserved, metrics_dir=Path(folder))
        grpc = "" if ports.grpc_port is None else f", gRPC {client_host(config.host)}:{ports.grpc_port}"
        on_event(
            f"kiln serving: HTTP http://{client_host(config.host)}:{ports.http_port} "
            f"(metrics /metrics, all workers){grpc}, {config.workers} workers"
        )
        supervisor = Supervisor(
            command_for(ports),
            config.workers,
            stop_timeout_s=config.drain_timeout_s + STOP_GRACE_S,
            on_event=on_event,
            backoff=backoff,
        )
        return supervisor.run()
