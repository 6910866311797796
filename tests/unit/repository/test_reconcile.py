"""The repository's decisions, driven with a fake clock: what is built, loaded and unloaded when."""

from __future__ import annotations

from kiln._clock import FakeClock
from kiln.repository.config import VersionPolicyConfig
from kiln.repository.reconcile import Build, PassedOver, Reconciler, Unload, select_versions
from kiln.repository.scan import ModelFolder, RepoFolder, RepoScan, VersionFolder, settle


class Repo:
    """A repository in memory: models, their config text and versions (content = a number)."""

    def __init__(self, clock: FakeClock, *, max_builds: int = 1) -> None:
        self.clock = clock
        self.models: dict[str, dict[str, int]] = {}
        self.configs: dict[str, str | None] = {}
        self.scan: RepoScan | None = None
        self.rec = Reconciler(clock, max_builds=max_builds)

    def put(self, model: str, version: str, content: int = 1, config: str | None = None) -> None:
        self.models.setdefault(model, {})[version] = content
        if config is not None:
            self.configs[model] = config

    def drop(self, model: str, version: str | None = None) -> None:
        if version is None:
            del self.models[model]
        else:
            del self.models[model][version]

    def poll(self) -> list[object]:
        self.clock.advance(1.0)
        folder = RepoFolder(
            tuple(
                ModelFolder(
                    name,
                    self.configs.get(name),
                    tuple(
                        VersionFolder(v, (("model.onnx", c, c),), True, True)
                        for v, c in sorted(versions.items(), key=lambda kv: int(kv[0]))
                    ),
                )
                for name, versions in sorted(self.models.items())
            )
        )
        self.scan = settle(self.scan, folder, now_s=self.clock.now(), settle_s=1.0)
        self.rec.observe_scan(self.scan)
        return self.plan()

    def plan(self) -> list[object]:
        return list(self.rec.plan())

    def states(self, model: str = "ctr") -> dict[str, str]:
        return {e.version: e.state for e in self.rec.index() if e.name == model}

    def reasons(self, model: str = "ctr") -> dict[str, str]:
        return {e.version: e.reason for e in self.rec.index() if e.name == model}

    def serve(self, build: Build, *, ok: bool = True) -> list[object]:
        """The build succeeds, its load succeeds (or fails) and the runtime serves it."""
        assert self.rec.build_done(build.model, build.version, build.target, error=None, summary="built")
        self.rec.load_done(
            build.model, build.version, build.target, ok=ok, reason="ready" if ok else "warm-up failed"
        )
        return self.plan()

    def fail(self, build: Build, why: str = "build failed: AccuracyError: drop 0.3 > 0.005") -> list[object]:
        assert not self.rec.build_done(build.model, build.version, build.target, error=why, summary="")
        return self.plan()

    def runtime_ready(self, model: str, *versions: str) -> list[object]:
        self.rec.observe_runtime(model, set(versions))
        return self.plan()


def only_build(actions: list[object]) -> Build:
    assert len(actions) == 1, actions
    assert isinstance(actions[0], Build), actions
    return actions[0]


def new_repo(**kwargs: int) -> Repo:
    return Repo(FakeClock(), **kwargs)


def test_select_versions_latest_and_specific() -> None:
    assert select_versions(VersionPolicyConfig(), ["1", "10", "9"]) == ["10"]
    assert select_versions(VersionPolicyConfig(latest=2), ["1", "10", "9"]) == ["9", "10"]
    assert select_versions(VersionPolicyConfig(specific=(1, 3)), ["1", "2", "3", "4"]) == ["1", "3"]
    assert select_versions(VersionPolicyConfig(specific=(7,)), ["1"]) == []


def test_a_new_version_is_built_loaded_and_shown_ready() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    build = only_build(repo.poll())
    assert (build.model, build.version) == ("ctr", "1")
    assert repo.states() == {"1": "LOADING"}
    assert repo.plan() == []  # never given twice
    assert repo.serve(build) == []
    assert repo.states() == {"1": "READY"}
    assert repo.reasons() == {"1": "ready"}
    assert repo.poll() == []  # nothing changed: nothing to do


def test_a_newer_version_swaps_in_while_the_old_one_serves() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    repo.serve(only_build(repo.poll()))
    repo.put("ctr", "2")
    build = only_build(repo.poll())
    assert build.version == "2"
    assert repo.states() == {"1": "READY", "2": "LOADING"}
    repo.serve(build)
    repo.runtime_ready("ctr", "2")  # the runtime released version 1 (keep_loaded 1)
    assert repo.states() == {"1": "UNAVAILABLE", "2": "READY"}
    assert repo.reasons()["1"] == "superseded by version 2"


def test_versions_arriving_during_a_build_coalesce_into_one_build_of_the_newest() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    repo.serve(only_build(repo.poll()))
    repo.put("ctr", "2")
    two = only_build(repo.poll())
    repo.put("ctr", "3")
    repo.put("ctr", "4")
    assert repo.poll() == []  # one build per model at a time
    assert repo.states() == {"1": "READY", "2": "LOADING", "3": "UNAVAILABLE", "4": "LOADING"}
    # version 2 is newer than what serves: it is loaded rather than thrown away
    assert repo.rec.build_done("ctr", "2", two.target, error=None, summary="built")
    repo.rec.load_done("ctr", "2", two.target, ok=True, reason="ready")
    four = only_build(repo.plan())
    assert four.version == "4"
    repo.serve(four)
    repo.runtime_ready("ctr", "4")
    assert repo.states() == {"1": "UNAVAILABLE", "2": "UNAVAILABLE", "3": "UNAVAILABLE", "4": "READY"}
    assert repo.reasons()["3"] == "superseded by version 4"
    assert repo.rec.take_passed_over() == []  # 3 was never queued: 4 came in the same scan


def test_a_queued_version_passed_over_for_a_newer_one_is_told_once() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    repo.serve(only_build(repo.poll()))
    repo.runtime_ready("ctr", "1")
    repo.put("ctr", "2")
    two = only_build(repo.poll())
    repo.put("ctr", "3")
    assert repo.poll() == []  # 3 queued behind 2's build
    repo.put("ctr", "4")
    assert repo.poll() == []
    assert repo.rec.take_passed_over() == [PassedOver("ctr", "3", "superseded by version 4")]
    assert repo.rec.take_passed_over() == []
    assert repo.rec.build_done("ctr", "2", two.target, error=None, summary="built")
    assert repo.rec.take_passed_over() == []


def test_a_finished_build_of_a_version_removed_meanwhile_is_not_loaded() -> None:
    repo = new_repo()
    repo.put("ctr", "2")
    two = only_build(repo.poll())
    repo.drop("ctr", "2")
    assert repo.poll() == []
    assert not repo.rec.build_done("ctr", "2", two.target, error=None, summary="built")
    assert repo.plan() == []
    assert repo.states() == {}


def test_a_finished_build_no_longer_selected_is_not_loaded() -> None:
    repo = new_repo()
    repo.put("ctr", "1", config="version_policy: {specific: [1]}\n")
    one = only_build(repo.poll())
    repo.configs["ctr"] = "version_policy: {specific: [2]}\n"
    repo.poll()
    assert not repo.rec.build_done("ctr", "1", one.target, error=None, summary="built")
    assert repo.rec.take_passed_over() == [PassedOver("ctr", "1", "no longer served")]
    assert repo.rec.take_passed_over() == []
    assert repo.states() == {"1": "UNAVAILABLE"}


def test_a_failed_build_is_shown_and_the_previous_version_keeps_serving() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    repo.serve(only_build(repo.poll()))
    repo.put("ctr", "2")
    assert repo.fail(only_build(repo.poll())) == []
    assert repo.states() == {"1": "READY", "2": "FAILED"}
    assert "AccuracyError" in repo.reasons()["2"]
    assert repo.poll() == []  # not retried while nothing changed
    repo.put("ctr", "2", content=2)  # new files in version 2: used once stable for settle_s
    assert repo.poll() == []
    assert only_build(repo.poll()).version == "2"


def test_a_failed_load_is_failed_too() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    repo.serve(only_build(repo.poll()))
    repo.put("ctr", "2")
    repo.serve(only_build(repo.poll()), ok=False)
    assert repo.states() == {"1": "READY", "2": "FAILED"}
    assert repo.reasons()["2"] == "warm-up failed"


def test_files_that_change_during_a_build_are_built_again_after_it() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    stale = only_build(repo.poll())
    repo.put("ctr", "1", content=2)
    repo.poll()
    assert repo.poll() == []  # the new content is accepted; the old one is still building
    fresh = only_build(repo.serve(stale))  # the old content serves meanwhile, then is rebuilt
    assert fresh.version == "1"
    assert fresh.target != stale.target
    assert repo.states() == {"1": "READY"}
    assert repo.serve(fresh) == []


def test_a_removed_version_is_unloaded_only_after_its_replacement_is_ready() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    repo.put("ctr", "2")
    repo.serve(only_build(repo.poll()))  # version 2 serves; 1 is not selected
    repo.drop("ctr", "2")
    one = only_build(repo.poll())
    assert one.version == "1"
    assert repo.states() == {"1": "LOADING", "2": "READY"}  # 2 keeps serving meanwhile
    assert repo.rec.build_done("ctr", "1", one.target, error=None, summary="built")
    assert repo.plan() == []  # still loading: no unload yet
    repo.rec.load_done("ctr", "1", one.target, ok=True, reason="ready")
    assert repo.plan() == [Unload("ctr", "2")]
    assert repo.states() == {"1": "READY", "2": "UNLOADING"}
    repo.rec.unload_done("ctr", "2")
    assert repo.states() == {"1": "READY"}


def test_a_removed_version_keeps_serving_when_its_replacement_fails() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    repo.put("ctr", "2")
    repo.serve(only_build(repo.poll()))
    repo.drop("ctr", "2")
    repo.fail(only_build(repo.poll()))
    assert repo.plan() == []
    assert repo.states() == {"1": "FAILED", "2": "READY"}


def test_removing_the_only_version_or_the_model_unloads_at_once() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    repo.put("cnn", "1")
    repo.serve(only_build(repo.serve(only_build(repo.poll()))))
    repo.drop("ctr", "1")
    assert repo.poll() == [Unload("ctr", "1")]
    repo.drop("cnn")
    assert repo.poll() == [Unload("cnn", "1")]
    repo.rec.unload_done("cnn", "1")
    assert repo.states("cnn") == {}


def test_explicit_unload_then_load() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    repo.serve(only_build(repo.poll()))
    repo.rec.request_unload("ctr")
    assert repo.plan() == [Unload("ctr", "1")]
    assert repo.states() == {"1": "UNLOADING"}
    repo.rec.unload_done("ctr", "1")
    assert repo.states() == {"1": "UNAVAILABLE"}
    assert repo.reasons() == {"1": "unloaded on request"}
    repo.put("ctr", "2")
    assert repo.poll() == []  # an unloaded model stays unloaded while polling
    repo.rec.request_load("ctr")
    assert only_build(repo.plan()).version == "2"


def test_explicit_load_reloads_a_serving_version_without_leaving_ready() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    first = only_build(repo.poll())
    repo.serve(first)
    repo.rec.request_load("ctr")
    again = only_build(repo.plan())
    assert again == first
    assert repo.states() == {"1": "READY"}
    assert repo.reasons()["1"].startswith("serving; a new engine is building")
    repo.fail(again)
    assert repo.states() == {"1": "READY"}
    assert repo.reasons()["1"].startswith("serving the engine it had; the new one failed")


def test_explicit_load_retries_a_failed_version() -> None:
    repo = new_repo()
    repo.put("ctr", "1")
    repo.fail(only_build(repo.poll()))
    assert repo.states() == {"1": "FAILED"}
    repo.rec.request_load("ctr")
    assert only_build(repo.plan()).version == "1"


def test_an_invalid_config_blocks_new_versions_but_not_what_serves() -> None:
    repo = new_repo()
    repo.put("ctr", "1", config="precision: fp32\n")
    repo.serve(only_build(repo.poll()))
    repo.put("ctr", "2", config="precison: int8\n")
    assert repo.poll() == []
    states, reasons = repo.states(), repo.reasons()
    assert states == {"1": "READY", "2": "FAILED"}
    assert "unknown key 'precison'" in reasons["2"]
    assert reasons["2"].startswith("ctr/config.yaml")
    repo.put("ctr", "2", config="precision: fp16\n")
    build = only_build(repo.poll())
    assert build.version == "2"


def test_an_invalid_config_with_nothing_serving_fails_every_version() -> None:
    repo = new_repo()
    repo.put("ctr", "1", config="version_policy: {latest: 0}\n")
    assert repo.poll() == []
    assert repo.states() == {"1": "FAILED"}
    assert "version_policy.latest" in repo.reasons()["1"]


def test_a_build_setting_change_rebuilds_the_served_version_and_a_serving_change_does_not() -> None:
    repo = new_repo()
    repo.put("ctr", "1", config="precision: fp32\n")
    first = only_build(repo.poll())
    repo.serve(first)
    repo.configs["ctr"] = "precision: fp32\nbatching: {max_queue_delay_us: 10}\n"
    assert repo.poll() == []
    repo.configs["ctr"] = "precision: fp16\n"
    rebuilt = only_build(repo.poll())
    assert rebuilt.version == "1"
    assert rebuilt.target != first.target
    assert repo.states() == {"1": "READY"}


def test_latest_two_builds_oldest_first_and_specific_picks() -> None:
    repo = new_repo()
    for version in ("1", "2", "3"):
        repo.put("ctr", version, config="version_policy: {latest: 2}\n")
    two = only_build(repo.poll())
    assert two.version == "2"
    three = only_build(repo.serve(two))
    assert three.version == "3"
    repo.configs["ctr"] = "version_policy: {specific: [1]}\n"
    assert repo.poll() == []  # version 3 still building
    assert repo.states() == {"1": "LOADING", "2": "READY", "3": "LOADING"}


def test_builds_are_shared_across_models_one_at_a_time() -> None:
    repo = new_repo(max_builds=1)
    repo.put("a", "1")
    repo.put("b", "1")
    first = only_build(repo.poll())
    assert first.model == "a"
    second = only_build(repo.serve(first))
    assert second.model == "b"
    wide = new_repo(max_builds=2)
    wide.put("a", "1")
    wide.put("b", "1")
    assert {a.model for a in wide.poll() if isinstance(a, Build)} == {"a", "b"}


def test_the_runtime_releasing_a_kept_version_is_noticed() -> None:
    repo = new_repo()
    repo.put("ctr", "1", config="version_policy: {latest: 2}\n")
    repo.put("ctr", "2")
    repo.serve(only_build(repo.serve(only_build(repo.poll()))))
    assert repo.states() == {"1": "READY", "2": "READY"}
    again = only_build(repo.runtime_ready("ctr", "2"))
    assert repo.states()["1"] == "LOADING"
    assert again.version == "1"  # still served by the policy: loaded again
