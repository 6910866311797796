"""``kiln usage`` through typer's CliRunner, on a real ledger file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kiln.cli.main import app
from kiln.metering.ledger import UsageLedger
from kiln.metering.meter import Metering
from kiln.metering.usage import UsageEvent

runner = CliRunner()


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "usage.db"
    now = time.time()
    metering = Metering(
        UsageLedger(path, background=False), efficiency_of=lambda m, v: 2.0 if v == "2" else 1.0
    )
    for tenant, model, version, when, device_s in [
        ("acme", "ctr", "1", now - 60, 1800.0),
        ("acme", "ctr", "2", now - 60, 1800.0),
        ("globex", "cnn", "7", now - 60, 3600.0),
        ("globex", "cnn", "7", now - 3 * 86400, 3600.0),  # outside --since 1d
    ]:
        metering.record(UsageEvent(when, tenant, model, version, 4, device_s))
    metering.close()
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["usage", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_table_by_tenant_with_both_costs(ledger: Path) -> None:
    code, out = invoke(
        "--ledger", str(ledger), "--since", "1d", "--price-per-device-hour", "2", "--price-per-epu", "0.001"
    )
    assert code == 0, out
    assert "usage by tenant since" in out
    for text in (
        "acme",
        "globex",
        "cost @ 2/device-h",
        "cost @ 0.001/EPU",
        "3,600.000",
        "5,400.000",
        "total",
    ):
        assert text in out
    assert "7,200.000" in out  # total device-s in range
    assert "10,800.000" not in out  # globex's old usage is out of range


def test_json_by_model(ledger: Path) -> None:
    code, out = invoke("--ledger", str(ledger), "--by", "model", "--json", "--price-per-epu", "0.5")
    assert code == 0, out
    data = json.loads(out)
    rows = {row["model"]: row for row in data["rows"]}
    assert rows["ctr"]["requests"] == 2
    assert rows["ctr"]["device_seconds"] == 3600.0
    assert rows["ctr"]["epu"] == 5400.0
    assert rows["ctr"]["cost_epu"] == 2700.0
    assert rows["ctr"]["cost_device_hours"] is None
    assert rows["cnn"]["requests"] == 2
    assert data["total"]["requests"] == 4
    assert data["since"] is None


def test_json_by_version_within_a_date_range(ledger: Path) -> None:
    code, out = invoke(
        "--ledger", str(ledger), "--by", "version", "--json", "--since", "2000-01-01", "--until", "1d"
    )
    assert code == 0, out
    data = json.loads(out)
    assert [row["version"] for row in data["rows"]] == ["cnn/7"]
    assert data["since"] == "2000-01-01T00:00:00+00:00"


def test_bad_since_exits_2_naming_the_formats(ledger: Path) -> None:
    code, out = invoke("--ledger", str(ledger), "--since", "last week")
    assert code == 2
    assert "--since is not a time kiln understands" in out
    assert "2026-11-01" in out
    assert "1h" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--price-per-epu", "-1"], "price per EPU"),
        (["--since", "1h", "--until", "2h"], "--until must be later than --since"),
    ],
)
def test_bad_options_exit_2(ledger: Path, args: list[str], message: str) -> None:
    code, out = invoke("--ledger", str(ledger), *args)
    assert code == 2
    assert message in out


def test_missing_or_foreign_ledger_exits_2(tmp_path: Path) -> None:
    code, out = invoke("--ledger", str(tmp_path / "nope.db"))
    assert code == 2
    assert "no usage ledger" in out
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"not sqlite at all " * 64)
    code, out = invoke("--ledger", str(foreign))
    assert code == 2
    assert "not a kiln usage ledger" in out


def test_unknown_grouping_is_refused(ledger: Path) -> None:
    code, _ = invoke("--ledger", str(ledger), "--by", "region")
    assert code == 2
