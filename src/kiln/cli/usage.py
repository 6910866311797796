"""``kiln usage``: requests, items, device-seconds, EPU and cost per tenant (or model) from a ledger.

Exit codes: 0 ok, 2 bad input (a time kiln does not understand, a negative price, no ledger at the
path, a file that is not a ledger), 1 anything else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kiln.errors import ConfigError, KilnError
from kiln.metering.report import (
    TIME_FORMATS,
    GroupBy,
    Prices,
    UsageLine,
    UsageReport,
    parse_time,
    usage_report,
)


def usage_command(
    *,
    ledger: Annotated[
        Path,
        typer.Option("--ledger", help="The usage ledger (SQLite file) the server writes.", dir_okay=False),
    ],
    since: Annotated[
        str | None, typer.Option(help=f"Start of the range: {TIME_FORMATS}. Default: all.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End of the range (excluded), same formats. Default: now.")
    ] = None,
    by: Annotated[GroupBy, typer.Option(help="Group rows by tenant, model, or model version.")] = "tenant",
    price_per_device_hour: Annotated[
        float | None, typer.Option(help="Price of one device-hour, for the device-hour cost column.")
    ] = None,
    price_per_epu: Annotated[
        float | None, typer.Option(help="Price of one EPU (one device-second at efficiency 1.0).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for machines instead of a table.")
    ] = False,
) -> None:
    """Report metered usage from a ledger, with costs under a per-device-hour and a per-EPU price."""

    def run() -> UsageReport:
        now = time.time()
        since_s = None if since is None else parse_time(since, now_s=now, option="--since")
        until_s = None if until is None else parse_time(until, now_s=now, option="--until")
        prices = Prices(price_per_device_hour, price_per_epu)
        return usage_report(ledger, by=by, prices=prices, since_s=since_s, until_s=until_s)

    report = _exit_on_error(run)
    if as_json:
        typer.echo(json.dumps({"ledger": str(ledger), **report.to_json()}, indent=2))
        return
    Console().print(usage_table(report))


def _exit_on_error(run: Callable[[], UsageReport]) -> UsageReport:
    err = Console(stderr=True)
    try:
        return run()
    except ConfigError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KilnError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as error:
        err.print(f"internal error: {type(error).__name__}: {error}", markup=False, highlight=False)
        raise typer.Exit(1) from None


def usage_table(report: UsageReport) -> Table:
    since = report.to_json()["since"] or "the start"
    table = Table(title=f"usage by {report.by} since {since}", show_footer=bool(report.lines))
    headers = [report.by, "requests", "items", "device-s", "EPU"]
    if report.prices.per_device_hour is not None:
        headers.append(f"cost @ {report.prices.per_device_hour:g}/device-h")
    if report.prices.per_epu is not None:
        headers.append(f"cost @ {report.prices.per_epu:g}/EPU")
    total = _cells(report.total, report.prices)
    for i, header in enumerate(headers):
        table.add_column(header, footer=total[i], justify="left" if i == 0 else "right")
    for line in report.lines:
        table.add_row(*_cells(line, report.prices))
    return table


def _cells(line: UsageLine, prices: Prices) -> list[str]:
    u = line.usage
    cells = [line.group, f"{u.requests:,}", f"{u.items:,}", f"{u.device_seconds:,.3f}", f"{u.epu:,.3f}"]
    if prices.per_device_hour is not None:
        cells.append(_money(line.cost_device_hours))
    if prices.per_epu is not None:
        cells.append(_money(line.cost_epu))
    return cells


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value >= 1 else f"{value:.4g}"
