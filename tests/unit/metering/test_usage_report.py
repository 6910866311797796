from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kiln.errors import ConfigError
from kiln.metering.buckets import Usage, UsageKey
from kiln.metering.report import Prices, build_report, cost, parse_time, summarize

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()
USAGE = {
    UsageKey("acme", "ctr", "1"): Usage(10, 40, 7200.0, 3600.0),
    UsageKey("acme", "ctr", "2"): Usage(5, 20, 3600.0, 7200.0),
    UsageKey("globex", "cnn", "7"): Usage(1, 1, 1800.0, 1800.0),
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC).timestamp()),
        ("2026-11-01T12:30", datetime(2026, 11, 1, 12, 30, tzinfo=UTC).timestamp()),
        ("2026-11-01T12:30:00Z", datetime(2026, 11, 1, 12, 30, tzinfo=UTC).timestamp()),
        ("2026-11-01T14:30:00+02:00", datetime(2026, 11, 1, 12, 30, tzinfo=UTC).timestamp()),
        ("90s", NOW - 90),
        ("30m", NOW - 1800),
        ("1h", NOW - 3600),
        ("1.5h", NOW - 5400),
        ("7d", NOW - 7 * 86400),
        ("2w", NOW - 14 * 86400),
    ],
)
def test_times_kiln_understands(text: str, expected: float) -> None:
    assert parse_time(text, now_s=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1y", "-1h", "2026-13-01", "", "h"])
def test_other_times_name_the_accepted_formats(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--until is not a time.*2026-11-01.*1h, 7d"):
        parse_time(text, now_s=NOW, option="--until")


def test_summaries_by_tenant_model_and_version() -> None:
    assert summarize(USAGE, "tenant") == [
        ("acme", Usage(15, 60, 10800.0, 10800.0)),
        ("globex", Usage(1, 1, 1800.0, 1800.0)),
    ]
    assert [g for g, _ in summarize(USAGE, "model")] == ["cnn", "ctr"]
    assert [g for g, _ in summarize(USAGE, "version")] == ["cnn/7", "ctr/1", "ctr/2"]
    with pytest.raises(ConfigError, match="tenant, model, version"):
        summarize(USAGE, "region")  # type: ignore[arg-type]


def test_costs_under_both_prices() -> None:
    usage = Usage(1, 1, 7200.0, 3600.0)
    assert cost(usage, Prices(per_device_hour=2.0, per_epu=0.001)) == (4.0, 3.6)
    assert cost(usage, Prices(per_epu=0.5)) == (None, 1800.0)
    assert cost(usage, Prices()) == (None, None)


@pytest.mark.parametrize("prices", [{"per_device_hour": -1.0}, {"per_epu": float("nan")}])
def test_prices_must_be_finite_and_not_negative(prices: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="price per"):
        Prices(**prices)


def test_report_lines_totals_and_json() -> None:
    report = build_report(USAGE, by="tenant", prices=Prices(1.0, 0.001), since_s=NOW - 3600)
    assert [line.group for line in report.lines] == ["acme", "globex"]
    assert report.total.usage == Usage(16, 61, 12600.0, 12600.0)
    assert report.total.cost_device_hours == pytest.approx(3.5)
    assert report.total.cost_epu == pytest.approx(12.6)
    data = report.to_json()
    assert data["since"] == "2026-11-20T11:00:00+00:00"
    assert data["until"] is None
    assert data["rows"][0] == {  # type: ignore[index]
        "tenant": "acme",
        "requests": 15,
        "items": 60,
        "device_seconds": 10800.0,
        "epu": 10800.0,
        "cost_device_hours": 3.0,
        "cost_epu": pytest.approx(10.8),
    }
    assert data["total"]["requests"] == 16  # type: ignore[index]


def test_an_empty_ledger_reports_zero() -> None:
    report = build_report({}, by="model", prices=Prices())
    assert report.lines == ()
    assert report.total.usage == Usage()
