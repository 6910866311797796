"""``python -m kiln`` runs the same command as the ``kiln`` console script, and starting the
command does not import matplotlib (only ``kiln bench --plot`` needs it)."""

from __future__ import annotations

import subprocess
import sys

from kiln import __version__


def test_python_dash_m_kiln_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kiln", "version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == __version__


def test_the_cli_does_not_import_matplotlib() -> None:
    code = "import sys, kiln.cli.main; print('matplotlib' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
