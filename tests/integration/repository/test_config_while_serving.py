"""Editing a serving model's config.yaml: the batcher's settings (queue delay and size, default
timeout, dispatch when idle) apply at once; the others wait for an unload and a load, and the
repository index says which."""

from __future__ import annotations

from pathlib import Path

import httpx
from repo_harness import ctr_bytes, repo_server, wait_for

from kiln.repository.layout import CONFIG_FILE, MODEL_FILE
from kiln.repository.publish import publish_version


def test_batcher_settings_apply_while_serving_and_the_rest_are_named(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "ctr").mkdir(parents=True)
    (repo / "ctr" / CONFIG_FILE).write_text("batching: {max_queue_delay_us: 100}\n")
    publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=0)})
    with repo_server(repo, tmp_path / "cache") as server:
        server.wait_state("ctr", "1", "READY")
        url = f"http://{server.http_url}/v2/models/ctr/config"

        def delay_us() -> object:
            return httpx.get(url).json()["dynamic_batching"]["max_queue_delay_microseconds"]

        assert delay_us() == 100
        (repo / "ctr" / CONFIG_FILE).write_text("batching: {max_queue_delay_us: 777}\n")
        wait_for(lambda: delay_us() == 777, 30, "the new queue delay served")
        assert server.runtime.model("ctr").batcher.limits.max_queue_delay_s == 777e-6
        entry = server.entry("ctr", "1")
        assert entry is not None
        assert entry.state == "READY"
        assert "config.yaml" not in entry.reason  # nothing waits for a reload

        config = "batching: {max_queue_delay_us: 555, max_queue_size: 7}\ninstances: {count: 2}\n"
        (repo / "ctr" / CONFIG_FILE).write_text(config)

        def noticed() -> bool:
            found = server.entry("ctr", "1")
            return found is not None and "num_instances" in found.reason

        wait_for(noticed, 30, "the index naming the setting that needs a reload")
        entry = server.entry("ctr", "1")
        assert entry is not None
        assert entry.state == "READY"
        assert "unload and a load" in entry.reason
        assert delay_us() == 555  # the batcher's part applied all the same
        assert server.runtime.model("ctr").batcher.max_queue_size == 7
        body = httpx.get(url).json()
        assert body["instance_group"][0]["count"] == 1  # the running instances, until a reload
        assert server.infer()[0] == "1"
