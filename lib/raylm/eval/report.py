"""Write a run's ``metrics.json`` (merged, never clobbered) and a short ``report.md``.

    from raylm.eval.report import write_evaluation, write_report
    write_report("outputs/sentiment_zh", {"test": model_metrics, "baseline": {"test": base}})
    write_evaluation(run_dir, metrics, confusion, labels)   # + learning curve, confusion plots

Layout the stages write (other top-level keys are kept in the JSON, not tabled)::

    {"test":     {"accuracy": ..., "f1": ..., "exact_match": ..., "perplexity": ...},
     "baseline": {"test": {...}, "fit_seconds": 3.1}}

The run's own metrics sit at the top level, per split, and show as the "model" column beside
the baseline; a section may also be written as ``{"model": {"test": {...}}}``, or hold the
metrics directly (shown as split "all"). Nested dicts are merged key by key, so the model and
the baseline can be written by different jobs; ``report.md`` is rebuilt from the merged file each
time. NaN/inf become null (strict JSON). Both files are written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

from raylm.fsutil import write_atomic

__all__ = ["read_history", "write_evaluation", "write_report"]

ROWS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "exact_match",
    "masked_accuracy",
    "hidden_accuracy",
    "perplexity",
    "loss",
    "count",
)
_SECTION_ORDER = ("model", "baseline")
_TIMINGS = ("fit_seconds", "train_seconds", "eval_seconds")


def _jsonable(value, path: str = "metrics"):
    """Plain JSON types: numpy scalars/arrays unwrapped, non-finite floats -> None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return _jsonable(value.tolist(), path)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"{path} is a {type(value).__name__}, which JSON cannot hold; drop it first")


def _deep_merge(old: dict, new: Mapping) -> dict:
    out = dict(old)
    for key, value in new.items():
        both_dicts = isinstance(value, Mapping) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value) if both_dicts else value
    return out


def _is_metrics(d) -> bool:
    return isinstance(d, Mapping) and any(isinstance(d.get(k), (int, float)) for k in ROWS)


def _splits(section) -> dict[str, Mapping]:
    """split name -> metric dict, for a section written either flat or per split."""
    if not isinstance(section, Mapping):
        return {}
    if _is_metrics(section):
        return {"all": section}
    if isinstance(section.get("metrics"), Mapping):  # fit_baseline's own return shape
        return _splits(section["metrics"])
    return {name: m for name, m in section.items() if _is_metrics(m)}


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "count":
        return str(int(value))
    return f"{value:.3f}" if key in ("perplexity", "loss") else f"{value:.4f}"


def _table(split: str, columns: dict[str, Mapping]) -> list[str]:
    names = list(columns)
    delta = names[:2] == ["model", "baseline"]
    header = ["metric", *names] + (["model - baseline"] if delta else [])
    lines = [f"### {split}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for key in ROWS:
        values = [columns[n].get(key) for n in names]
        if all(not isinstance(v, (int, float)) for v in values):
            continue
        cells = [_fmt(key, v) if isinstance(v, (int, float)) else "-" for v in values]
        if delta:
            a, b = values[0], values[1]
            both = isinstance(a, (int, float)) and isinstance(b, (int, float)) and key != "count"
            cells.append(f"{a - b:+.4f}" if both else "")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    averages = {m.get("average") for m in columns.values()} - {None}
    notes = {"binary": "binary, positive class 1", "macro": "macro average over classes"}
    if averages:
        lines += [
            "",
            "precision/recall/f1: " + "; ".join(notes.get(a, a) for a in sorted(averages)),
        ]
    return lines + [""]


def _model_view(metrics: Mapping) -> dict:
    """The run's own metrics sit at the top level (`test.accuracy`, as metrics.json promises);
    show them as the "model" section beside the baseline."""
    top = {k: v for k, v in metrics.items() if k not in _SECTION_ORDER and _is_metrics(v)}
    rest = {k: v for k, v in metrics.items() if k not in top}
    return {"model": top, **rest} if top and "model" not in metrics else dict(metrics)


def _render(metrics: Mapping, run_dir: str) -> str:
    metrics = _model_view(metrics)
    sections = [k for k in _SECTION_ORDER if _splits(metrics.get(k))]
    sections += [k for k in metrics if k not in sections and _splits(metrics[k])]
    lines = [f"# Evaluation report: {os.path.basename(os.path.abspath(run_dir))}", ""]
    if not sections:
        lines.append("No model or baseline metrics yet.")
    split_names: list[str] = []
    for section in sections:
        split_names += [s for s in _splits(metrics[section]) if s not in split_names]
    for split in split_names:
        columns = {s: _splits(metrics[s])[split] for s in sections if split in _splits(metrics[s])}
        lines += _table(split, columns)
    timings = [
        f"{section} {key.replace('_seconds', '')} {metrics[section][key]:.1f} s"
        for section in sections
        for key in _TIMINGS
        if isinstance(metrics[section].get(key), (int, float))
    ]
    if timings:
        lines += ["Timings: " + "; ".join(timings) + ".", ""]
    for png in sorted(f for f in os.listdir(run_dir) if f.endswith(".png")):
        lines += [f"![{png[:-4]}]({png})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(run_dir: str | os.PathLike, metrics: Mapping) -> dict[str, str]:
    """Merge ``metrics`` into ``run_dir/metrics.json`` and rewrite ``run_dir/report.md``.

    Returns ``{"metrics_json": path, "report_md": path}``.
    """
    run_dir = os.fspath(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    json_path = os.path.join(run_dir, "metrics.json")
    existing: dict = {}
    if os.path.exists(json_path):
        with open(json_path, encoding="utf-8") as f:
            try:
                existing = json.load(f)
            except json.JSONDecodeError as err:
                # Refuse rather than overwrite: the file may hold another job's results.
                raise ValueError(f"{json_path} is not valid JSON ({err}); fix or move it") from err
        if not isinstance(existing, dict):
            raise ValueError(f"{json_path} holds a {type(existing).__name__}, not an object")
    merged = _deep_merge(existing, _jsonable(metrics))
    write_atomic(json_path, json.dumps(merged, indent=2, ensure_ascii=False, allow_nan=False))
    md_path = os.path.join(run_dir, "report.md")
    write_atomic(md_path, _render(merged, run_dir))
    return {"metrics_json": json_path, "report_md": md_path}


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The metric history `raylm train` recorded in train_result.json (empty before training)."""
    path = os.path.join(run_dir, "train_result.json")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("history", [])


def write_evaluation(
    run_dir: str | os.PathLike,
    metrics: Mapping,
    confusion: list[list[int]] | None = None,
    labels: list[str] | None = None,
) -> dict[str, str]:
    """What every task's evaluation leaves in the run folder: learning_curve.png (from the
    training history), confusion_matrix.png (classifiers), metrics.json and report.md."""
    from pathlib import Path

    from raylm.eval.plots import plot_confusion_matrix, plot_learning_curve

    run_dir = Path(run_dir)
    history = read_history(run_dir)
    if history:
        plot_learning_curve(history, run_dir / "learning_curve.png", title=run_dir.name)
    if confusion:
        plot_confusion_matrix(confusion, labels or [], run_dir / "confusion_matrix.png")
    return write_report(run_dir, metrics)
