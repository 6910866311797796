"""EngineStore on a real folder: commit, verify, list, lock, remove, gc."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cache_fakes import digest, flip_byte, make_manifest, temp_leftovers

from kiln._clock import FakeClock
from kiln.cache.checksum import hash_file
from kiln.cache.gc import collect_garbage
from kiln.cache.remove import remove_entries
from kiln.cache.store import CacheBusy, EngineStore, default_cache_dir
from kiln.compile.backends.base import MANIFEST_NAME, EngineArtifact
from kiln.errors import BuildError, CacheCorrupt, ConfigError

KEY = digest("key")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> EngineStore:
    return EngineStore(tmp_path / "engines", wall_clock=clock)


def put(store: EngineStore, weights: str, *, key: str = KEY, payload: bytes = b"engine") -> EngineArtifact:
    with store.staging(key) as out:
        (out / "engine.bin").write_bytes(payload)
        (out / "sub").mkdir()
        (out / "sub" / "weights.dat").write_bytes(b"w" * 10)
        return store.commit(out, make_manifest(key, digest(weights)))


def test_commit_checksums_every_file_and_renames_into_place(store: EngineStore, clock: FakeClock) -> None:
    artifact = put(store, "w1")
    assert artifact.path == store.root / KEY / digest("w1")[:16]
    on_disk = EngineArtifact.read(artifact.path).manifest
    assert set(on_disk.files) == {"engine.bin", "sub/weights.dat"}
    assert on_disk.files["sub/weights.dat"] == hash_file(artifact.path / "sub" / "weights.dat")
    assert on_disk.files["engine.bin"].size_bytes == 6
    assert on_disk.created_at == clock.now()
    assert temp_leftovers(store.root) == []
    assert store.open(store.entries(KEY)[0]).manifest == on_disk


def test_same_key_other_weights_coexist(store: EngineStore) -> None:
    put(store, "w1")
    put(store, "w2")
    assert {e.weights_hash for e in store.entries(KEY)} == {digest("w1"), digest("w2")}
    lookup = store.lookup(KEY, digest("w2"))
    assert lookup is not None
    assert lookup.weights_hash == digest("w2")
    assert [e.weights_hash for e in store.structure_matches(KEY, digest("w2"))] == [digest("w1")]
    assert store.lookup(KEY, digest("w3")) is None


def test_flipped_byte_is_corrupt(store: EngineStore) -> None:
    artifact = put(store, "w1")
    flip_byte(artifact.path / "sub" / "weights.dat", 3)
    with pytest.raises(CacheCorrupt, match=r"sub/weights\.dat: sha256 differs"):
        store.open(store.entries(KEY)[0])


def test_open_can_keep_the_verified_engine_bytes_and_still_refuses_a_flipped_byte(store: EngineStore) -> None:
    artifact = put(store, "w1", payload=b"engine bytes")
    entry = store.entries(KEY)[0]
    assert store.open(entry).engine_bytes is None
    assert store.open(entry, keep_engine=True).engine_bytes == b"engine bytes"
    flip_byte(artifact.path / "engine.bin", 2)
    with pytest.raises(CacheCorrupt, match=r"engine\.bin: sha256 differs"):
        store.open(entry, keep_engine=True)


def test_truncated_or_missing_file_is_corrupt(store: EngineStore) -> None:
    artifact = put(store, "w1")
    (artifact.path / "engine.bin").write_bytes(b"eng")
    (artifact.path / "sub" / "weights.dat").unlink()
    with pytest.raises(CacheCorrupt, match=r"engine\.bin: 3 bytes, manifest says 6.*weights\.dat: missing"):
        store.open(store.entries(KEY)[0])


def test_manifest_that_is_not_json_is_unreadable_and_corrupt(store: EngineStore) -> None:
    artifact = put(store, "w1")
    (artifact.path / MANIFEST_NAME).write_text("{not json")
    [entry] = store.entries(KEY)
    assert entry.manifest is None
    assert entry.problem is not None
    assert "not JSON" in entry.problem
    with pytest.raises(CacheCorrupt, match="no readable manifest"):
        store.open(entry)


def test_manifest_of_another_key_or_schema_is_unreadable(store: EngineStore) -> None:
    artifact = put(store, "w1")
    data = json.loads((artifact.path / MANIFEST_NAME).read_text())
    (artifact.path / MANIFEST_NAME).write_text(json.dumps({**data, "key": digest("other")}))
    assert store.entries(KEY)[0].manifest is None
    (artifact.path / MANIFEST_NAME).write_text(json.dumps([1, 2]))
    assert store.entries(KEY)[0].manifest is None


def test_manifest_path_escaping_the_entry_is_corrupt(store: EngineStore) -> None:
    artifact = put(store, "w1")
    data = json.loads((artifact.path / MANIFEST_NAME).read_text())
    data["files"]["../../secret"] = {"sha256": "0" * 64, "size_bytes": 1}
    (artifact.path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(CacheCorrupt, match="escapes the entry folder"):
        store.open(store.entries(KEY)[0])


def stage_and_commit(store: EngineStore, populate: Callable[[Path], None]) -> None:
    with store.staging(KEY) as out:
        populate(out)
        store.commit(out, make_manifest(KEY, digest("w1")))


def test_commit_refuses_a_missing_engine_file_and_leaves_nothing(store: EngineStore) -> None:
    with pytest.raises(BuildError, match="did not write"):
        stage_and_commit(store, lambda out: (out / "other.bin").write_bytes(b"x"))
    assert store.list_entries() == []
    assert temp_leftovers(store.root) == []


def test_commit_refuses_a_symlink(store: EngineStore, tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("secret")

    def populate(out: Path) -> None:
        (out / "engine.bin").write_bytes(b"engine")
        os.symlink(tmp_path / "outside", out / "link")

    with pytest.raises(BuildError, match="plain files"):
        stage_and_commit(store, populate)
    assert store.list_entries() == []
    assert temp_leftovers(store.root) == []


def test_staging_is_removed_when_the_build_raises(store: EngineStore) -> None:
    seen: list[Path] = []

    def crash(out: Path) -> None:
        seen.append(out)
        (out / "engine.bin").write_bytes(b"half")
        raise RuntimeError("crash mid-build")

    with pytest.raises(RuntimeError, match="crash"):
        stage_and_commit(store, crash)
    assert temp_leftovers(store.root) == []
    assert seen
    assert not seen[0].exists()


def test_touch_moves_last_used(store: EngineStore, clock: FakeClock) -> None:
    artifact = put(store, "w1")
    assert store.entries(KEY)[0].last_used == clock.now()
    clock.advance(3600)
    store.touch(artifact)
    assert store.entries(KEY)[0].last_used == clock.now()


def test_remove_leaves_no_trace(store: EngineStore) -> None:
    artifact = put(store, "w1")
    store.remove(store.entries(KEY)[0])
    assert not artifact.path.exists()
    assert not (store.root / KEY).exists()
    assert temp_leftovers(store.root) == []


def test_lock_times_out_with_cache_busy(store: EngineStore) -> None:
    with (
        store.lock(KEY),
        pytest.raises(CacheBusy, match="locked by another builder"),
        store.lock(KEY, timeout_s=0.01),
    ):
        pass
    with store.lock(KEY, timeout_s=0.01):
        assert store.try_lock(KEY) is None


def test_default_cache_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert EngineStore().root == tmp_path / "c"
    monkeypatch.delenv("KILN_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "kiln" / "engines"


def test_listing_a_missing_root_creates_nothing(tmp_path: Path) -> None:
    store = EngineStore(tmp_path / "absent")
    assert store.list_entries() == []
    assert not store.root.exists()


def test_gc_removes_stale_temp_folders_but_not_a_live_builders(store: EngineStore) -> None:
    live_key = digest("live")
    temp = store.root / ".tmp"
    temp.mkdir(parents=True)
    (temp / f"build.{KEY}.crashed").mkdir()
    (temp / f"build.{KEY}.crashed" / "engine.bin").write_bytes(b"x" * 50)
    (temp / f"build.{live_key}.running").mkdir()
    (temp / "trash.old").mkdir()
    (temp / "junk").write_text("?")
    with store.lock(live_key):
        report = collect_garbage(store)
    assert sorted(report.temp_removed) == [f"build.{KEY}.crashed", "junk", "trash.old"]
    assert report.temp_freed_bytes >= 50
    assert temp_leftovers(store.root) == [f"build.{live_key}.running"]


def test_gc_evicts_least_recently_used_to_the_budget(store: EngineStore, clock: FakeClock) -> None:
    old = put(store, "old", key=digest("k1"))
    clock.advance(10)
    put(store, "new", key=digest("k2"))
    clock.advance(10)
    store.touch(old)  # the old one was used last: the other goes
    sizes = {e.key: e.size_bytes for e in store.list_entries()}
    report = collect_garbage(store, max_bytes=sizes[digest("k1")])
    assert [e.key for e in report.removed] == [digest("k2")]
    assert report.freed_bytes == sizes[digest("k2")]
    assert [e.key for e in store.list_entries()] == [digest("k1")]
    assert not (store.root / digest("k2")).exists()


def test_gc_never_evicts_an_entry_whose_key_is_locked(store: EngineStore) -> None:
    put(store, "w1")
    with store.lock(KEY):
        report = collect_garbage(store, max_bytes=0)
    assert report.removed == ()
    assert [e.key for e in report.skipped_locked] == [KEY]
    assert len(store.list_entries()) == 1
    assert collect_garbage(store, max_bytes=0).removed != ()
    assert store.list_entries() == []


def test_gc_refuses_a_negative_budget(store: EngineStore) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        collect_garbage(store, max_bytes=-1)


def test_remove_entries_by_prefix(store: EngineStore) -> None:
    put(store, "w1")
    put(store, "w2")
    removed = remove_entries(store, KEY[:6])
    assert len(removed) == 2
    assert store.list_entries() == []
    with pytest.raises(ConfigError, match="no cache entry matches"):
        remove_entries(store, KEY[:6])
