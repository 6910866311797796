"""``kiln cache ls|rm|gc`` through typer's CliRunner, on a real cache folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kiln._clock import FakeClock
from kiln.cache.store import EngineStore
from kiln.cli.main import app
from kiln.compile.backends.base import Manifest, Target
from kiln.compile.spec import BuildSpec
from kiln.types import TensorSpec

runner = CliRunner()
TARGET = Target("fake", "1.0", "cpu", "Fake CPU", "avx2")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def put(store: EngineStore, key: str, weights: str, *, model: str, size: int) -> None:
    manifest = Manifest(
        key=key,
        backend="fake",
        engine_file="engine.bin",
        fingerprint={"structure_hash": digest("net"), "weights_hash": digest(weights)},
        spec=BuildSpec(precision="int8").to_json(),
        target=TARGET.to_json(),
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("y", "FP32", (-1, 1)),),
        files={},
        build_path="refit",
        build_seconds=12.25,
        created_at=0.0,
        extra={"model_name": model},
    )
    with store.staging(key) as out:
        (out / "engine.bin").write_bytes(b"e" * size)
        store.commit(out, manifest)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    clock = FakeClock(start=1_700_000_000.0)
    store = EngineStore(tmp_path / "engines", wall_clock=clock)
    put(store, "aa" + digest("k1")[2:], "w1", model="ranker", size=4000)
    clock.advance(60)
    put(store, "ab" + digest("k2")[2:], "w1", model="fraud", size=2000)
    return store.root


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["cache", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_ls_prints_a_table(cache: Path) -> None:
    code, out = invoke("ls", "--cache-dir", str(cache))
    assert code == 0
    assert "2 cached engine(s)" in out
    for text in ("ranker", "fraud", "int8", "cpu-avx2", "refit", "12.2", f"aa{digest('k1')[2:12]}"):
        assert text in out


def test_ls_json(cache: Path) -> None:
    code, out = invoke("ls", "--json", "--cache-dir", str(cache))
    assert code == 0
    rows = json.loads(out)
    assert [r["model"] for r in rows] == ["ranker", "fraud"]
    assert rows[0]["precision"] == "int8"
    assert rows[0]["target"] == "cpu-avx2"
    assert rows[0]["weights_hash"] == digest("w1")
    assert rows[0]["size_bytes"] > 4000


def test_ls_uses_the_environment_default(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_CACHE_DIR", str(cache))
    code, out = invoke("ls", "--json")
    assert code == 0
    assert len(json.loads(out)) == 2


def test_rm_by_prefix(cache: Path) -> None:
    code, out = invoke("rm", "aa", "--cache-dir", str(cache))
    assert code == 0
    assert f"removed aa{digest('k1')[2:12]}/" in out
    assert _models(cache) == ["fraud"]


@pytest.mark.parametrize(
    ("prefix", "message"),
    [("a", "ambiguous"), ("ff", "no cache entry matches"), ("xyz", "not a cache entry prefix")],
)
def test_rm_bad_prefix_exits_2_and_removes_nothing(cache: Path, prefix: str, message: str) -> None:
    code, out = invoke("rm", prefix, "--cache-dir", str(cache))
    assert code == 2
    assert message in out
    assert len(_models(cache)) == 2


def test_gc_evicts_lru_to_a_human_budget(cache: Path) -> None:
    code, out = invoke("gc", "--max-bytes", "5KiB", "--cache-dir", str(cache))
    assert code == 0
    assert f"evicted aa{digest('k1')[2:12]}/" in out
    assert "freed" in out
    assert _models(cache) == ["fraud"]


def test_gc_json_and_nothing_to_do(cache: Path) -> None:
    code, out = invoke("gc", "--max-bytes", "2GiB", "--json", "--cache-dir", str(cache))
    assert code == 0
    report = json.loads(out)
    assert report["removed"] == []
    assert report["max_bytes"] == 2 * 2**30


def test_gc_bad_size_exits_2(cache: Path) -> None:
    code, out = invoke("gc", "--max-bytes", "lots", "--cache-dir", str(cache))
    assert code == 2
    assert "not a byte size" in out
    assert len(_models(cache)) == 2


def test_rm_while_a_builder_holds_the_key_exits_1(cache: Path) -> None:
    store = EngineStore(cache)
    key = store.list_entries()[0].key
    with store.lock(key):
        code, out = invoke("rm", key[:8], "--wait-s", "0.01", "--cache-dir", str(cache))
    assert code == 1
    assert "locked by another builder" in out
    assert len(_models(cache)) == 2


def _models(cache: Path) -> list[object]:
    return [e.manifest.extra["model_name"] if e.manifest else None for e in EngineStore(cache).list_entries()]
