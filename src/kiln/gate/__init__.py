"""``kiln gate``: the release gate. Build a candidate model, check it, publish it on success.

Checks (each against a threshold; see :class:`GateThresholds`): accuracy versus the fp32 reference
and versus the served version, p99 latency at a given load, throughput speedup over the unoptimized
baseline at a p99 bound, build time; plus the candidate's signature against the served model's.
The decisions are pure functions in :mod:`kiln.gate.checks`; :func:`run_gate` measures and decides;
:class:`GateReport` prints as a table and writes JSON and JUnit XML. See ``docs/gate.md``.
"""

from kiln.gate.checks import CheckResult, accuracy_check, accuracy_drop_check, signature_check
from kiln.gate.config import GateConfig, GateLoad, GateThresholds
from kiln.gate.report import GateReport, junit_xml, release_tag, render_table
from kiln.gate.run import run_gate

__all__ = [
    "CheckResult",
    "GateConfig",
    "GateLoad",
    "GateReport",
    "GateThresholds",
    "accuracy_check",
    "accuracy_drop_check",
    "junit_xml",
    "release_tag",
    "render_table",
    "run_gate",
    "signature_check",
]
