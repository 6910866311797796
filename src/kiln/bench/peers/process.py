"""Starting and stopping a server under test on loopback, in a process of its own.

:class:`PeerProcess` runs ``python -m kiln.bench.peers.serve KIND ...`` in a new process group on
a free port, waits until ``/v2/health/ready`` answers 200 (``ConfigError`` with the end of its
output when it exits or times out first), and on :meth:`PeerProcess.stop` ends that group:
SIGTERM, then SIGKILL after a grace period. LitServe's worker processes go with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, TypeAlias

from kiln.errors import ConfigError, describe

PeerKind: TypeAlias = Literal["kiln", "fastapi-ort", "litserve", "unoptimized"]
PEER_KINDS: tuple[PeerKind, ...] = ("kiln", "fastapi-ort", "litserve", "unoptimized")
"""``kiln`` (kiln's server: runtime with dynamic batching), ``fastapi-ort`` (FastAPI + ONNX Runtime,
one request per run), ``litserve`` (LitServe + ONNX Runtime, its batching on), ``unoptimized`` (fp32,
graph optimizations off, one run at a time, no batching)."""

KILN_SERVER_MODULE = "kiln.cli.serve_engine"
"""What ``python -m`` runs for kind ``kiln``: kiln's server in front of one engine."""


@dataclass(frozen=True)
class PeerSpec:
    """One server to start. ``model``: an ONNX file (``kiln``: or an engine artifact folder).

    ``max_batch_size`` / ``max_queue_delay_us`` configure the batching servers (kiln, litserve);
    ``instances`` kiln's execution instances and ``intra_op_threads`` the threads of each engine run
    (0: kiln's thread policy, which splits the CPUs among the instances); ``dispatch_when_idle``
    kiln's batching setting of that name; ``cache_dir`` kiln's engine cache.
    """

    kind: PeerKind
    model: Path
    name: str
    max_batch_size: int = 32
    max_queue_delay_us: int = 2000
    instances: int = 1
    intra_op_threads: int = 0
    dispatch_when_idle: bool = True
    cache_dir: Path | None = None
    startup_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.kind not in PEER_KINDS:
            raise ConfigError(
                describe("unknown peer", seen=self.kind, fix=f"use one of {', '.join(PEER_KINDS)}")
            )
        if self.instances < 1 or self.intra_op_threads < 0:
            raise ConfigError(
                describe(
                    "a peer needs instances >= 1 and intra_op_threads >= 0",
                    seen=f"instances={self.instances}, intra_op_threads={self.intra_op_threads}",
                    fix="e.g. instances=2, intra_op_threads=1 (0: kiln's thread policy)",
                )
            )

    def command(self, port: int) -> list[str]:
        """The server's command line. kiln's own server is the CLI layer's entry point (a process,
        so this layer never imports the server); the peers are :mod:`kiln.bench.peers.serve`."""
        common = ["--model", str(self.model), "--name", self.name, "--port", str(port),
                  "--max-batch-size", str(self.max_batch_size),
                  "--max-queue-delay-us", str(self.max_queue_delay_us)]  # fmt: skip
        if self.kind != "kiln":
            return [sys.executable, "-m", "kiln.bench.peers.serve", self.kind, *common]
        args = [sys.executable, "-m", KILN_SERVER_MODULE, *common, "--instances", str(self.instances),
                "--intra-op-threads", str(self.intra_op_threads)]  # fmt: skip
        if not self.dispatch_when_idle:
            args.append("--no-dispatch-when-idle")
        if self.cache_dir is not None:
            args += ["--cache-dir", str(self.cache_dir)]
        return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PeerProcess:
    """A running server of ``spec`` (a context manager: started on enter, stopped on exit)."""

    def __init__(self, spec: PeerSpec) -> None:
        self.spec = spec
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PeerProcess:
        self.port = free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(self.spec.command(self.port), stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True, env=env)  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.spec.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                seen = f"exit {self._proc.returncode}: {self.output_tail()}"
                raise ConfigError(describe(f"the {self.spec.kind} server exited while starting", seen=seen))
            if _ready(self.url):
                return
            time.sleep(0.1)
        raise ConfigError(
            describe(
                f"the {self.spec.kind} server was not ready within {self.spec.startup_timeout_s:g} s",
                seen=self.output_tail(),
                fix="check that the model loads, or raise startup_timeout_s",
            )
        )

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by the processes of the server's group that
        are alive now (Linux ``/proc``; 0.0 elsewhere). The difference over a load step divided by
        its requests is the server's CPU cost per request."""
        if self._proc is None:
            return 0.0
        return group_cpu_seconds(self._proc.pid)

    def output_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-limit:].strip()

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(grace_s)
        if proc is not None:
            _signal_group(proc.pid, signal.SIGKILL)  # leftovers of the group (worker processes)
            _wait_group_gone(proc.pid, grace_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> PeerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def group_cpu_seconds(pgid: int, proc_root: Path = Path("/proc")) -> float:
    """Sum of user + system CPU seconds of the live processes in process group ``pgid``."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for stat in proc_root.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 12 and int(fields[2]) == pgid:  # fields after "(comm)": state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Wait until no process of the group is left (reaped worker processes included)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        time.sleep(0.05)
    return False


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
