"""A gate's outcome: :class:`GateReport`, its release tag, and its forms (terminal table, JSON,
JUnit XML for CI systems)."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kiln.gate.checks import CheckResult

_TAG_PART = re.compile(r"[^A-Za-z0-9]+")


def release_tag(model: str, structure_hash: str, target_tag: str, precision: str) -> str:
    """``<model>-<structure hash[:8]>-<target>-<precision>``, e.g. ``ctr-3f9a2c1d-cpu-avx512-int8``:
    binds what was gated to the graph, the hardware it was built for and its precision."""
    parts = [model, structure_hash[:8], target_tag, precision]
    return "-".join(_TAG_PART.sub("-", p).strip("-").lower() for p in parts if p)


@dataclass(frozen=True)
class GateReport:
    """Everything one gate run decided and measured.

    ``checks`` in the order they ran; ``passed`` only when none failed. ``published`` names the
    repository version written on success (``None`` when not asked or not passed).
    """

    model: str
    candidate: str
    precision: str
    tag: str
    build: Mapping[str, object]
    checks: tuple[CheckResult, ...]
    served: str | None = None
    measurements: Mapping[str, object] = field(default_factory=dict)
    published: Mapping[str, str] | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "candidate": self.candidate,
            "precision": self.precision,
            "tag": self.tag,
            "passed": self.passed,
            "build": dict(self.build),
            "served": self.served,
            "checks": [c.to_json() for c in self.checks],
            "measurements": dict(self.measurements),
            "published": dict(self.published) if self.published else None,
        }

    def write_json(self, path: Path) -> None:
        _write_atomic(path, json.dumps(self.to_json(), indent=2, default=str))

    def write_junit(self, path: Path) -> None:
        _write_atomic(path, junit_xml(self))


def junit_xml(report: GateReport) -> str:
    """One ``<testsuite>`` with a ``<testcase>`` per check: ``<failure>`` or ``<skipped>`` with the detail."""
    suite = ET.Element(
        "testsuite",
        name=f"kiln gate {report.model}",
        tests=str(len(report.checks)),
        failures=str(sum(c.status == "fail" for c in report.checks)),
        skipped=str(sum(c.status == "skipped" for c in report.checks)),
        errors="0",
    )
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="tag", value=report.tag)
    for check in report.checks:
        case = ET.SubElement(suite, "testcase", classname=f"kiln.gate.{report.model}", name=check.name)
        text = f"measured {_value(check)}, threshold {check.comparison} {_threshold(check)}"
        if check.status == "fail":
            ET.SubElement(case, "failure", message=check.detail or text).text = text
        elif check.status == "skipped":
            ET.SubElement(case, "skipped", message=check.detail)
        else:
            ET.SubElement(case, "system-out").text = text + (f" ({check.detail})" if check.detail else "")
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def render_table(report: GateReport, console: Console) -> None:
    """The checks as a table, then one line: passed, or which checks failed."""
    table = Table(title=f"kiln gate: {report.model} ({report.tag})")
    for column in ("check", "measured", "threshold", "result", "detail"):
        table.add_column(column, justify="right" if column in ("measured", "threshold") else "left")
    for check in report.checks:
        style = {"pass": "green", "fail": "bold red", "skipped": "dim"}[check.status]
        table.add_row(check.name, _value(check), f"{check.comparison} {_threshold(check)}",
                      f"[{style}]{check.status}[/]", check.detail)  # fmt: skip
    console.print(table)
    if report.passed:
        console.print(f"[green]gate passed[/]: {report.tag}")
    else:
        console.print(f"[bold red]gate failed[/]: {', '.join(c.name for c in report.failed)}")


def _value(check: CheckResult) -> str:
    if check.measured is None:
        return "-"
    return f"{check.measured:.4g} {check.unit}"


def _threshold(check: CheckResult) -> str:
    return "-" if check.threshold is None else f"{check.threshold:g} {check.unit}"


def _write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    temp.replace(path)
