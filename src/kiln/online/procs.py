"""``kiln serve`` and ``kiln train`` as child processes: started with the loop's settings, their
output read on a thread, the server's ports taken from its banner. Used by ``kiln demo online``,
the loop's benchmark and its tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kiln.errors import KilnError, describe

KILN = [sys.executable, "-c", "from kiln.cli.main import main; main()"]
STARTUP_TIMEOUT_S = 120.0


class ChildFailed(KilnError):
    """A child process of the loop stopped or did not say what it was expected to in time."""


@dataclass
class Child:
    """A running ``kiln`` subcommand, its output lines kept (and queued for waiting)."""

    name: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str] = field(default_factory=queue.Queue)

    @classmethod
    def start(
        cls, name: str, args: list[str], *, log: Path | None = None, env: dict[str, str] | None = None
    ) -> Child:
        process = subprocess.Popen(
            [*KILN, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        child = cls(name, process)
        threading.Thread(target=child._read, args=(log,), name=f"{name}-output", daemon=True).start()
        return child

    def _read(self, log: Path | None) -> None:
        handle = open(log, "a", encoding="utf-8") if log is not None else None  # noqa: SIM115
        try:
            for line in self.process.stdout or ():
                self.lines.append(line)
                self._queue.put(line)
                if handle is not None:
                    handle.write(line)
                    handle.flush()
        finally:
            if handle is not None:
                handle.close()

    def wait_line(self, pattern: str, timeout_s: float = STARTUP_TIMEOUT_S) -> re.Match[str]:
        """The first line from now on that matches ``pattern``; ``ChildFailed`` when the process
        ends or ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        compiled = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildFailed(self._why(f"no line matching {pattern!r} after {timeout_s:g} s"))
            try:
                line = self._queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.process.poll() is not None and self._queue.empty():
                    raise ChildFailed(self._why(f"exited with {self.process.returncode}")) from None
                continue
            match = compiled.search(line)
            if match is not None:
                return match

    def _why(self, what: str) -> str:
        tail = "".join(self.lines[-20:])
        return describe(f"{self.name}: {what}", seen=tail[-2000:], fix="see its output above")

    def pause(self) -> None:
        """SIGSTOP: frozen where it is until :meth:`resume`."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no cleanup (what a crash looks like)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``. Returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return int(self.process.returncode)


@dataclass
class ServerChild:
    """``kiln serve REPO --feedback ...`` on loopback, with the ports it took."""

    child: Child
    http_url: str
    grpc_url: str | None


def start_server(
    repo: Path,
    feedback: Path,
    cache: Path,
    *,
    max_auc_drop: float = 0.01,
    min_holdout: int = 200,
    poll_interval_s: float = 0.1,
    build_in: str = "process",
    log: Path | None = None,
    extra: tuple[str, ...] = (),
) -> ServerChild:
    """Start ``kiln serve`` on free loopback ports; returns once it listens (not yet ready)."""
    args = ["serve", str(repo), "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"]
    args += ["--feedback", str(feedback), "--max-auc-drop", str(max_auc_drop), "--cache-dir", str(cache)]
    args += ["--min-holdout", str(min_holdout)]
    args += ["--poll-interval-s", str(poll_interval_s), "--settle-s", "0", "--build-in", build_in, *extra]
    child = Child.start("kiln serve", args, log=log)
    banner = child.wait_line(r"kiln serving: HTTP http://([\d.]+:\d+)")
    grpc = re.search(r"gRPC ([\d.]+:\d+)", banner.string)
    return ServerChild(child, banner.group(1), grpc.group(1) if grpc else None)


def start_trainer(
    repo: Path,
    feedback: Path,
    *,
    every_samples: int,
    every_s: float,
    read_events: int = 4096,
    max_auc_drop: float = 0.01,
    learning_rate: float = 1e-3,
    embedding_learning_rate: float = 1e-2,
    batch_size: int = 256,
    threads: int = 1,
    log: Path | None = None,
) -> Child:
    """Start ``kiln train`` on ``repo``'s ``ctr`` model (torch on ``threads`` threads, so that it
    leaves the other cores to the server)."""
    args = ["train", str(repo), "--model", "ctr", "--feedback", str(feedback)]
    args += ["--every-samples", str(every_samples), "--every-s", str(every_s)]
    args += ["--read-events", str(read_events), "--max-auc-drop", str(max_auc_drop)]
    args += ["--learning-rate", str(learning_rate), "--embedding-learning-rate", str(embedding_learning_rate)]
    args += ["--batch-size", str(batch_size)]
    return Child.start("kiln train", args, log=log, env={"OMP_NUM_THREADS": str(threads)})
