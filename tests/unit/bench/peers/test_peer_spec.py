from __future__ import annotations

from pathlib import Path

import pytest

from kiln.bench.peers import PeerSpec
from kiln.cli.serve_engine import parse_args
from kiln.errors import ConfigError


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_kiln_gets_instances_and_threads_per_run() -> None:
    spec = PeerSpec("kiln", Path("engine"), "ranker", instances=2, intra_op_threads=1)
    command = spec.command(8000)
    assert command[1:3] == ["-m", "kiln.cli.serve_engine"]
    assert (option(command, "--instances"), option(command, "--intra-op-threads")) == ("2", "1")
    args = parse_args(command[3:])
    assert (args.instances, args.intra_op_threads, args.port) == (2, 1, 8000)


def test_by_default_kiln_chooses_the_threads() -> None:
    command = PeerSpec("kiln", Path("engine"), "cnn").command(8000)
    assert option(command, "--intra-op-threads") == "0"
    assert parse_args(["--model", "m", "--name", "n", "--port", "1"]).intra_op_threads == 0


def test_peers_do_not_get_kiln_options() -> None:
    command = PeerSpec("fastapi-ort", Path("m.onnx"), "ctr", instances=2, intra_op_threads=1).command(8000)
    assert "--intra-op-threads" not in command
    assert "--instances" not in command


@pytest.mark.parametrize(("instances", "threads"), [(0, 1), (1, -1)])
def test_bad_instances_or_threads_are_refused(instances: int, threads: int) -> None:
    with pytest.raises(ConfigError, match=f"instances={instances}, intra_op_threads={threads}"):
        PeerSpec("kiln", Path("engine"), "ctr", instances=instances, intra_op_threads=threads)
