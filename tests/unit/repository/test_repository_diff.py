"""diff(previous, current): every kind of change, its order, and a property over random repositories."""

from __future__ import annotations

from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from kiln.repository.diff import ChangeKind, RepoChange, diff
from kiln.repository.scan import ModelScan, RepoScan, VersionFolder, VersionScan

K = ChangeKind


def vscan(name: str, stamp: str | None, *, present_stamp: str = "s", reason: str = "") -> VersionScan:
    folder = VersionFolder(name, (("model.onnx", 1, 1),), True, False)
    return VersionScan(folder, 0.0, 0.0, False, stamp, reason)


def model(name: str, config: str | None = None, **versions: str | None) -> ModelScan:
    scans = {v.lstrip("v"): vscan(v.lstrip("v"), stamp) for v, stamp in versions.items()}
    return ModelScan(name, config, False, MappingProxyType(scans))


def scan(*models: ModelScan) -> RepoScan:
    return RepoScan(0.0, MappingProxyType({m.name: m for m in models}))


def test_nothing_to_nothing() -> None:
    assert diff(None, scan()) == []
    assert diff(scan(), scan()) == []


def test_a_new_repository_adds_models_and_their_complete_versions() -> None:
    current = scan(model("ctr", "precision: int8", v1="a", v2=None, v3="c"), model("cnn"))
    assert diff(None, current) == [
        RepoChange(K.MODEL_ADDED, "cnn"),
        RepoChange(K.MODEL_ADDED, "ctr"),
        RepoChange(K.VERSION_ADDED, "ctr", "1"),
        RepoChange(K.VERSION_ADDED, "ctr", "3"),
    ]


def test_an_unchanged_repository_has_no_changes() -> None:
    state = scan(model("ctr", "x: 1", v1="a", v2=None))
    assert diff(state, state) == []


def test_a_version_becoming_complete_is_added() -> None:
    before = scan(model("ctr", v1="a", v2=None))
    after = scan(model("ctr", v1="a", v2="b"))
    assert diff(before, after) == [RepoChange(K.VERSION_ADDED, "ctr", "2")]


def test_new_accepted_content_is_a_change() -> None:
    before = scan(model("ctr", v1="a"))
    after = scan(model("ctr", v1="a2"))
    assert diff(before, after) == [RepoChange(K.VERSION_CHANGED, "ctr", "1", "files changed")]


def test_a_removed_folder_and_a_version_no_longer_complete_are_removed() -> None:
    before = scan(model("ctr", v1="a", v2="b"))
    gone = ModelScan(
        "ctr", None, False, MappingProxyType({"2": vscan("2", None, reason="incomplete: no model.onnx yet")})
    )
    assert diff(before, scan(gone)) == [
        RepoChange(K.VERSION_REMOVED, "ctr", "1", "folder removed"),
        RepoChange(K.VERSION_REMOVED, "ctr", "2", "incomplete: no model.onnx yet"),
    ]


def test_a_removed_model_removes_its_versions_after_the_model_event() -> None:
    before = scan(model("ctr", v1="a", v2=None, v3="c"))
    assert diff(before, scan()) == [
        RepoChange(K.MODEL_REMOVED, "ctr"),
        RepoChange(K.VERSION_REMOVED, "ctr", "1", "folder removed"),
        RepoChange(K.VERSION_REMOVED, "ctr", "3", "folder removed"),
    ]


def test_config_added_edited_removed() -> None:
    none, one, two = scan(model("m")), scan(model("m", "a: 1")), scan(model("m", "a: 2"))
    assert diff(none, one) == [RepoChange(K.CONFIG_CHANGED, "m", detail="added")]
    assert diff(one, two) == [RepoChange(K.CONFIG_CHANGED, "m", detail="edited")]
    assert diff(two, none) == [RepoChange(K.CONFIG_CHANGED, "m", detail="removed")]


def test_versions_are_in_numeric_order_and_models_in_name_order() -> None:
    before = scan(model("b", v9="x"), model("a"))
    after = scan(model("b", v10="y", v9="x", v2="z"), model("a", v1="w"))
    assert [(c.model, c.version) for c in diff(before, after)] == [("a", "1"), ("b", "2"), ("b", "10")]


def test_changes_read_well() -> None:
    assert (
        str(RepoChange(K.VERSION_REMOVED, "ctr", "3", "folder removed"))
        == "version-removed ctr/3 (folder removed)"
    )
    assert str(RepoChange(K.MODEL_ADDED, "ctr")) == "model-added ctr"


Accepted = dict[str, tuple[str | None, dict[str, str | None]]]

repositories = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.tuples(
        st.sampled_from([None, "x: 1", "x: 2"]),
        st.dictionaries(st.sampled_from(["1", "2", "3", "10"]), st.sampled_from([None, "s1", "s2"])),
    ),
)


def as_scan(state: Accepted) -> RepoScan:
    return scan(
        *(
            ModelScan(name, config, False, MappingProxyType({v: vscan(v, s) for v, s in versions.items()}))
            for name, (config, versions) in state.items()
        )
    )


def accepted(state: Accepted) -> dict[tuple[str, str], str]:
    return {(m, v): s for m, (_, versions) in state.items() for v, s in versions.items() if s is not None}


@given(repositories, repositories)
def test_applying_the_changes_gives_the_new_repository(before: Accepted, after: Accepted) -> None:
    changes = diff(as_scan(before), as_scan(after))
    replayed = dict(accepted(before))
    models = set(before)
    stamps = accepted(after)
    for change in changes:
        key = (change.model, change.version or "")
        if change.kind is K.MODEL_ADDED:
            assert change.model not in models
            models.add(change.model)
        elif change.kind is K.MODEL_REMOVED:
            models.discard(change.model)
        elif change.kind is K.VERSION_ADDED:
            assert key not in replayed
            replayed[key] = stamps[key]
        elif change.kind is K.VERSION_REMOVED:
            del replayed[key]
        elif change.kind is K.VERSION_CHANGED:
            assert replayed[key] != stamps[key]
            replayed[key] = stamps[key]
        else:
            assert before[change.model][0] != after[change.model][0]
    assert replayed == stamps
    assert models == set(after)
    configs_changed = {c.model for c in changes if c.kind is K.CONFIG_CHANGED}
    assert configs_changed == {m for m in set(before) & set(after) if before[m][0] != after[m][0]}
    assert diff(as_scan(after), as_scan(after)) == []
