"""``kiln serve REPO --workers 2`` as real processes: both workers serve a real tritonclient on the
shared loopback ports, a worker killed with SIGKILL is restarted while the other keeps serving,
and SIGTERM to the supervisor drains the requests in flight in every worker and exits 0, with
the usage of both workers added up in the one SQLite ledger. Model statistics, whichever worker
answers, count the requests of both."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kiln.examples import get_example, make_model, make_samples
from kiln.metering.ledger_db import read_usage
from kiln.repository.layout import CONFIG_FILE, MODEL_FILE, STATE_DIR
from kiln.repository.publish import publish_version
from kiln.server.grpc._generated import kserve_pb2 as pb
from kiln.server.grpc._generated import kserve_pb2_grpc as pb_grpc

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="--workers needs Linux")

KILN = [sys.executable, "-c", "from kiln.cli.main import main; main()"]
WORKER_LABEL = re.compile(r'worker="(\d+)"')


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Served:
    process: subprocess.Popen[str]
    http: str
    grpc: str
    reader: threading.Thread
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def rest(self) -> str:
        """Everything printed, once the process has exited."""
        self.reader.join(30)
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return "".join(self.seen)

    def next_line(self, pattern: str) -> re.Match[str]:
        while True:
            line = self.lines.get(timeout=120)
            self.seen.append(line)
            if match := re.match(pattern, line):
                return match

    def pids_ready(self, count: int) -> dict[int, int]:
        """Worker index -> pid, once ``count`` workers said they are ready."""
        ready: dict[int, int] = {}
        while len(ready) < count:
            match = self.next_line(r"kiln worker (\d+) ready \(pid (\d+)\)")
            ready[int(match[1])] = int(match[2])
        return ready


@contextmanager
def serve_workers(tmp_path: Path, config: str = "") -> Iterator[Served]:
    repo = tmp_path / "repo"
    repo.mkdir()
    if config:
        (repo / "ctr").mkdir()
        (repo / "ctr" / CONFIG_FILE).write_text(config)
    publish_version(repo, "ctr", {MODEL_FILE: make_model("ctr", size="tiny").SerializeToString()})
    args = ["serve", str(repo), "--workers", "2", "--host", "127.0.0.1", "--http-port", "0"]
    args += ["--grpc-port", "0", "--build-in", "thread", "--poll-interval-s", "0"]
    args += ["--cache-dir", str(tmp_path / "cache")]
    process = subprocess.Popen(
        [*KILN, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in process.stdout or ()], daemon=True)
        reader.start()
        banner = lines.get(timeout=120)
        match = re.search(r"http://([\d.]+:\d+).*gRPC ([\d.]+:\d+), 2 workers", banner)
        assert match is not None, banner
        yield Served(process, match[1], match[2], reader, lines, [banner])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def http_infer(url: str) -> np.ndarray:
    """One request over a new connection (so the kernel may pick either worker)."""
    client = httpclient.InferenceServerClient(url)
    try:
        samples = make_samples("ctr", 1, size="tiny", seed=3)
        inputs = []
        for spec in get_example("ctr").inputs("tiny"):
            tensor = httpclient.InferInput(spec.name, list(samples[spec.name].shape), spec.datatype)
            tensor.set_data_from_numpy(samples[spec.name], binary_data=True)
            inputs.append(tensor)
        result = client.infer("ctr", inputs).as_numpy("prob")
        assert result is not None
        return result
    finally:
        client.close()


def grpc_infer(url: str) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    try:
        samples = make_samples("ctr", 1, size="tiny", seed=3)
        inputs = []
        for spec in get_example("ctr").inputs("tiny"):
            tensor = grpcclient.InferInput(spec.name, list(samples[spec.name].shape), spec.datatype)
            tensor.set_data_from_numpy(samples[spec.name])
            inputs.append(tensor)
        result = client.infer("ctr", inputs).as_numpy("prob")
        assert result is not None
        return result
    finally:
        client.close()


def successes_by_worker(url: str) -> dict[str, float]:
    """From one scrape, which any worker answers for all: worker label -> successful ctr requests."""
    text = httpx.get(f"http://{url}/metrics").text
    types = re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE)
    assert len(types) == len(set(types)), "a metric family appears twice in one exposition"
    found = re.findall(r'kiln_requests_total\{model="ctr",outcome="success",worker="(\d+)"\} (\S+)', text)
    return {worker: float(value) for worker, value in found}


def client_on(url: str, worker: str) -> httpx.Client:
    """An HTTP connection that the kernel gave to ``worker`` (a connection stays on one worker):
    the answering worker's own samples come first in its ``/metrics``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        client = httpx.Client(base_url=f"http://{url}", timeout=60)
        labels = WORKER_LABEL.findall(client.get("/metrics").text)
        if labels and labels[0] == worker:
            return client
        client.close()
    raise AssertionError(f"no connection reached worker {worker} within 60 s")


def test_two_workers_serve_tritonclient_and_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    with serve_workers(tmp_path) as served:
        pids = served.pids_ready(2)
        expected = grpc_infer(served.grpc)
        served_by: dict[str, float] = {}

        def both_workers_served() -> bool:
            np.testing.assert_allclose(http_infer(served.http), expected, rtol=1e-6)
            served_by.update(successes_by_worker(served.http))
            return sorted(w for w, n in served_by.items() if n > 0) == ["0", "1"]

        wait_for(both_workers_served, 60, "requests served by both workers")
        assert successes_by_worker(served.http).keys() == {"0", "1"}  # any connection: both

        os.kill(pids[0], signal.SIGKILL)
        died = served.next_line(rf"kiln worker 0 \(pid {pids[0]}\) exited: signal SIGKILL; restarting")
        assert died is not None
        for _ in range(5):  # worker 1 alone, while worker 0 is down
            np.testing.assert_allclose(http_infer(served.http), expected, rtol=1e-6)
        restarted = served.pids_ready(1)
        assert set(restarted) == {0}
        assert restarted[0] != pids[0]

        served_by.clear()
        wait_for(both_workers_served, 60, "requests served by the restarted worker too")
        assert served.process.poll() is None

        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0, "".join(served.seen)


SLOW_CONFIG = "max_batch_size: 1\nbatching:\n  max_queue_delay_us: 0\n"
ENGINE_DELAY_MS = 2500
"""Each engine run's delay: a worker's two requests stay in flight for 5 s, long enough for the
test to see both admitted on a loaded machine (it checks through new connections)."""


def test_sigterm_drains_every_worker_and_exits_0(tmp_path: Path) -> None:
    with serve_workers(tmp_path, SLOW_CONFIG) as served:
        served.pids_ready(2)
        workers = ["0", "1"]
        for worker in workers:
            with closing(client_on(served.http, worker)) as admin:
                reply = admin.post("/v2/admin/models/ctr/faults", json={"delay_ms": ENGINE_DELAY_MS})
                assert reply.status_code == 200, reply.text
        callers = [client_on(served.http, worker) for worker in workers for _ in range(2)]
        body = {"inputs": json_inputs()}
        with ThreadPoolExecutor(len(callers)) as pool:
            calls = [pool.submit(c.post, "/v2/models/ctr/infer", json=body) for c in callers]

            def admitted(worker: str) -> bool:
                with closing(client_on(served.http, worker)) as probe:
                    status = probe.get("/v2/admin/models/ctr/status").json()
                return bool(status["queue_size"] + status["running_batches"] == 2)

            for worker in workers:
                wait_for(lambda w=worker: admitted(w), 30, f"2 requests in flight on worker {worker}")
            served.process.send_signal(signal.SIGTERM)
            replies = [call.result(60) for call in calls]
        assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]
        assert served.process.wait(60) == 0, "".join(served.seen)
        for caller in callers:
            caller.close()
    log = served.rest()
    assert "SIGTERM to 2 worker(s)" in log
    assert log.count("exited: exit code 0") == 2
    usage = read_usage(tmp_path / "repo" / STATE_DIR / "usage.sqlite")
    assert sum(u.requests for u in usage.values()) == 4


def json_inputs() -> list[dict[str, object]]:
    samples = make_samples("ctr", 1, size="tiny", seed=3)
    return [
        {
            "name": s.name,
            "datatype": s.datatype,
            "shape": list(samples[s.name].shape),
            "data": samples[s.name].ravel().tolist(),
        }
        for s in get_example("ctr").inputs("tiny")
    ]


def model_ready(client: httpx.Client) -> bool:
    return client.get("/v2/models/ctr/ready").status_code == 200


def test_admin_calls_through_one_connection_reach_both_workers(tmp_path: Path) -> None:
    with serve_workers(tmp_path) as served:
        served.pids_ready(2)
        on = {worker: client_on(served.http, worker) for worker in ("0", "1")}
        grpc = grpcclient.InferenceServerClient(served.grpc)
        try:
            reply = on["0"].post("/v2/admin/models/ctr/faults", json={"fail_next": 1000})
            assert reply.status_code == 200, reply.text
            for worker, client in on.items():  # both workers' engines now fail
                failed = client.post("/v2/models/ctr/infer", json={"inputs": json_inputs()})
                assert failed.status_code == 503, (worker, failed.text)
            cleared = on["1"].delete("/v2/admin/models/ctr/faults")
            assert cleared.status_code == 200, cleared.text

            unloaded = on["1"].post("/v2/repository/models/ctr/unload", json={})
            assert unloaded.status_code == 200, unloaded.text
            for worker, client in on.items():
                wait_for(lambda c=client: not model_ready(c), 60, f"ctr unloaded on worker {worker}")

            grpc.load_model("ctr")  # through whichever worker the kernel picked
            for worker, client in on.items():
                wait_for(lambda c=client: model_ready(c), 60, f"ctr loaded again on worker {worker}")
                served_again = client.post("/v2/models/ctr/infer", json={"inputs": json_inputs()})
                assert served_again.status_code == 200, (worker, served_again.text)  # faults cleared too

            grpc.unload_model("ctr")
            for worker, client in on.items():
                wait_for(lambda c=client: not model_ready(c), 60, f"ctr unloaded by gRPC on worker {worker}")
        finally:
            grpc.close()
            for client in on.values():
                client.close()
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0, "".join(served.seen)


def test_an_admin_call_a_stuck_worker_does_not_answer_fails_naming_it(tmp_path: Path) -> None:
    with serve_workers(tmp_path) as served:
        pids = served.pids_ready(2)
        with closing(client_on(served.http, "0")) as admin:
            os.kill(pids[1], signal.SIGSTOP)
            try:
                reply = admin.post("/v2/admin/models/ctr/faults", json={"delay_ms": 0})
            finally:
                os.kill(pids[1], signal.SIGCONT)
        assert reply.status_code == 503, reply.text
        message = reply.json()["error"]
        assert message.startswith("faults of model 'ctr' was applied on worker(s) 0 only"), message
        assert "worker 1 did not answer: no reply within" in message
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0, "".join(served.seen)


def http_stats(client: httpx.Client, path: str = "/v2/models/ctr/stats") -> tuple[int, dict[str, str]]:
    """Successful ctr requests in one statistics reply, and the reply's ``kiln-*`` headers."""
    reply = client.get(path)
    assert reply.status_code == 200, reply.text
    (entry,) = [e for e in reply.json()["model_stats"] if e["name"] == "ctr"]
    assert entry["inference_count"] == entry["inference_stats"]["success"]["count"]  # one row each
    return entry["inference_stats"]["success"]["count"], {
        k: v for k, v in reply.headers.items() if k.startswith("kiln-")
    }


def grpc_stats(channel: grpc.Channel) -> tuple[int, dict[str, str]]:
    """The same over gRPC: the count, and the call's ``kiln-*`` trailing metadata."""
    stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
    reply, call = stub.ModelStatistics.with_call(pb.ModelStatisticsRequest(name="ctr"), timeout=30)
    (entry,) = reply.model_stats
    trailing = {k: str(v) for k, v in call.trailing_metadata() or () if k.startswith("kiln-")}
    return entry.inference_stats.success.count, trailing


def test_statistics_through_any_connection_count_the_requests_of_every_worker(tmp_path: Path) -> None:
    with serve_workers(tmp_path) as served:
        served.pids_ready(2)
        sent = 0

        def both_workers_served() -> bool:
            nonlocal sent
            http_infer(served.http)  # each on a new connection, so the kernel spreads them
            grpc_infer(served.grpc)
            sent += 2
            by_worker = successes_by_worker(served.http)
            return sent >= 10 and sorted(w for w, n in by_worker.items() if n > 0) == ["0", "1"]

        wait_for(both_workers_served, 60, "requests served by both workers")
        assert sum(successes_by_worker(served.http).values()) == sent

        answered: dict[str, set[str]] = {"http": set(), "grpc": set()}

        def every_worker_answered_with_the_total() -> bool:
            with httpx.Client(base_url=f"http://{served.http}", timeout=30) as client:
                for path in ("/v2/models/ctr/stats", "/v2/models/ctr/versions/1/stats", "/v2/models/stats"):
                    count, headers = http_stats(client, path)
                    assert count == sent, (path, headers)
                    assert "kiln-workers-missing" not in headers
                    answered["http"].add(headers["kiln-worker"])
            with grpc.insecure_channel(served.grpc) as channel:
                count, trailing = grpc_stats(channel)
                assert count == sent, trailing
                assert "kiln-workers-missing" not in trailing
                answered["grpc"].add(trailing["kiln-worker"])
            return answered == {"http": {"0", "1"}, "grpc": {"0", "1"}}

        wait_for(every_worker_answered_with_the_total, 60, "statistics answered by each worker")

        for _ in range(6):  # real clients, each on a new connection
            http_client = httpclient.InferenceServerClient(served.http)
            try:
                (entry,) = http_client.get_inference_statistics("ctr")["model_stats"]
                assert entry["inference_stats"]["success"]["count"] == sent
            finally:
                http_client.close()
            grpc_client = grpcclient.InferenceServerClient(served.grpc)
            try:
                (message,) = grpc_client.get_inference_statistics("ctr").model_stats
                assert message.inference_stats.success.count == sent
                assert message.inference_count == sent
            finally:
                grpc_client.close()
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0, "".join(served.seen)


def test_statistics_leave_out_a_stuck_worker_and_name_it(tmp_path: Path) -> None:
    with serve_workers(tmp_path) as served:
        pids = served.pids_ready(2)
        on = {worker: client_on(served.http, worker) for worker in ("0", "1")}
        channel = grpc.insecure_channel(served.grpc)
        try:
            served_by = {"0": 3, "1": 2}
            for worker, times in served_by.items():
                for _ in range(times):
                    reply = on[worker].post("/v2/models/ctr/infer", json={"inputs": json_inputs()})
                    assert reply.status_code == 200, reply.text
            total, trailing = grpc_stats(channel)  # the channel keeps its one connection
            assert total == 5
            answering = trailing["kiln-worker"]
            stuck = "1" if answering == "0" else "0"
            assert http_stats(on[answering]) == (5, {"kiln-worker": answering})
            os.kill(pids[int(stuck)], signal.SIGSTOP)
            try:
                alone = http_stats(on[answering])
                alone_grpc = grpc_stats(channel)
            finally:
                os.kill(pids[int(stuck)], signal.SIGCONT)
            named = {"kiln-worker": answering, "kiln-workers-missing": stuck}
            assert alone == (served_by[answering], named)
            assert alone_grpc == (served_by[answering], named)
            assert http_stats(on[answering]) == (5, {"kiln-worker": answering})  # back once it answers
        finally:
            channel.close()
            for client in on.values():
                client.close()
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0, "".join(served.seen)
