"""Build reports as tables and JSON, for ``kiln build`` and ``kiln demo``."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console

from kiln.cache.builder import BuildReport
from kiln.cache.key import SHORT_LEN

_FIGURES = (
    ("top1_agreement", "top-1 agreement"),
    ("auc_candidate", "AUC"),
    ("spearman", "Spearman"),
)
NOT_MEASURED = "not measured (no validation or calibration data)"


def report_json(report: BuildReport) -> dict[str, object]:
    """The report as JSON data, with the model and precision from the engine's manifest."""
    manifest = report.artifact.manifest
    return {
        "ok": True,
        "model": manifest.extra.get("model_name"),
        "precision": manifest.spec.get("precision"),
        **report.to_json(),
        "calibration_file": manifest.calibration_file,
    }


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def accuracy_figure(accuracy: Mapping[str, object] | None) -> str:
    """The task's figure and the drop, e.g. ``top-1 agreement 0.9141; drop 0.0859 <= bound 0.1``."""
    if accuracy is None:
        return NOT_MEASURED
    return f"{task_figure(accuracy)}; {drop_text(accuracy)}"


def task_figure(accuracy: Mapping[str, object]) -> str:
    """``AUC 0.7731 (fp32 0.7752)``, ``top-1 agreement 0.9141``, ``Spearman 0.9942``, or for task
    ``none`` the relative L2 error."""
    for key, label in _FIGURES:
        value = _number(accuracy.get(key))
        if value is None:
            continue
        reference = _number(accuracy.get("auc_reference")) if key == "auc_candidate" else None
        return f"{label} {value:.4f}" + (f" (fp32 {reference:.4f})" if reference is not None else "")
    return f"relative L2 error {_show(_number(accuracy.get('rel_l2_error')))}"


def drop_text(accuracy: Mapping[str, object], *, label: str = "drop ") -> str:
    """``drop 0.0859 <= bound 0.1`` (the bound only when one was set)."""
    bound = _number(accuracy.get("max_accuracy_drop"))
    text = f"{label}{_show(_number(accuracy.get('drop')))}"
    return text + (f" <= bound {bound:g}" if bound is not None else "")


def wide_console() -> Console:
    """The stdout console; 120 columns when stdout is not a terminal (a file, a pipe, a CI log)."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def accuracy_errors(accuracy: Mapping[str, object] | None) -> str:
    """Max abs and relative L2 error and where they were measured."""
    if accuracy is None:
        return "-"
    max_abs = _number(accuracy.get("max_abs_error"))
    rel_l2 = _number(accuracy.get("rel_l2_error"))
    where = f"{accuracy.get('num_samples', '?')} {accuracy.get('samples_from', 'validation')} samples"
    return f"max abs {_show(max_abs)}, rel L2 {_show(rel_l2)} on {where}"


def summary_rows(report: BuildReport) -> list[tuple[str, str]]:
    """(field, value) rows describing one build, in reading order."""
    manifest = report.artifact.manifest
    waited = (
        f" (waited {report.wait_seconds:.2f} s for another builder)" if report.wait_seconds >= 0.01 else ""
    )
    return [
        ("model", f"{manifest.extra.get('model_name', '?')} ({manifest.spec.get('precision', '?')})"),
        ("path taken", report.path),
        ("build seconds", f"{report.build_seconds:.2f}{waited}"),
        ("engine size", human_bytes(report.engine_size_bytes)),
        ("accuracy vs fp32", accuracy_figure(report.accuracy)),
        ("errors vs fp32", accuracy_errors(report.accuracy)),
        ("engine key", f"{report.key[:SHORT_LEN]} (weights {report.weights_hash[:8]})"),
        ("target", report.target_tag),
        ("artifact", str(report.artifact.path)),
    ]


def _show(value: float | None) -> str:
    return "inf" if value is None else f"{value:.3g}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
