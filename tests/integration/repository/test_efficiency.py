"""EPU: a served version is metered at the efficiency factor in its engine's manifest (1.0 when
the manifest has none), from before it takes its first request until the runtime releases it."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

from repo_harness import ctr_bytes, repo_server, wait_for

from kiln.compile.backends.base import EngineArtifact
from kiln.metering import EfficiencyTable
from kiln.repository import BuildJob, BuildOutcome, ThreadBuilder
from kiln.repository.layout import MODEL_FILE
from kiln.repository.publish import publish_version

MEASURED = 2.5


class MeasuredBuilder(ThreadBuilder):
    """Builds for real, then gives version 1's engine a measured efficiency factor (as
    ``kiln bench`` writes into manifests)."""

    def submit(self, job: BuildJob) -> Future[BuildOutcome]:
        outer: Future[BuildOutcome] = Future()

        def measured(done: Future[BuildOutcome]) -> None:
            outcome = done.result()
            if outcome.primary is not None and job.version == "1":
                artifact = outcome.primary.artifact
                manifest = replace(artifact.manifest, efficiency_factor=MEASURED)
                primary = replace(outcome.primary, artifact=EngineArtifact(artifact.path, manifest))
                outcome = replace(outcome, primary=primary)
            outer.set_result(outcome)

        super().submit(job).add_done_callback(measured)
        return outer


def test_the_manifest_efficiency_factor_prices_the_version_it_serves(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=0)})
    table = EfficiencyTable()
    with repo_server(repo, tmp_path / "cache", builder=MeasuredBuilder(), efficiency=table) as server:
        server.wait_state("ctr", "1", "READY")
        assert table("ctr", "1") == MEASURED

        publish_version(repo, "ctr", {MODEL_FILE: ctr_bytes(seed=1)})
        server.wait_state("ctr", "2", "READY")
        assert table("ctr", "2") == 1.0  # not measured: one EPU per device-second

        # version 1 was replaced; once the runtime released it, its factor is forgotten
        wait_for(lambda: table("ctr", "1") == 1.0, 30, "version 1's factor forgotten")
        assert table("ctr", "2") == 1.0
