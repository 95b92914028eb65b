"""Many runs at a glance: `raylm runs` lists an output folder, `raylm compare` sets runs side
by side.

    runs = list_runs("outputs")                   # a RunInfo per <output_dir>/<name>/config.yaml
    table = compare(["outputs/a", "outputs/b"])   # config fields that differ; metrics per run
    plot_curves(["outputs/a", "outputs/b"], "outputs/compare.png")   # validation curves overlaid

Every file of a run folder may be missing or unreadable; what it would have said is then None.
The state is run.json's (raylm.runstate), except that a `running` record of a process on this
host that no longer exists reads `interrupted` (it was killed without unwinding). Without a
run.json (a run made before it existed): `finished` if metrics.json exists, `interrupted` if
training left train_result.json or checkpoints, else `unknown`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raylm.runfolder import RECORD, differences, flatten
from raylm.runstate import read_state

IGNORED_FIELDS = {"run.name", "run.output_dir"}  # differ between any two runs by construction
_CHECKPOINT = re.compile(r"checkpoint_step(\d+)")
_LOWER_IS_BETTER = ("loss", "perplexity", "error")
_COLOURS = {"finished": "green", "running": "cyan", "failed": "red", "interrupted": "yellow"}


@dataclass
class RunInfo:
    name: str
    path: str
    task: str | None = None
    model: str | None = None
    state: str = "unknown"
    error: str | None = None
    best_metric: str | None = None
    best_value: float | None = None
    test: dict[str, float] = field(default_factory=dict)
    steps: int | None = None
    wall_seconds: float | None = None
    started: float | None = None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _config(run_dir: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((run_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _section(data: Any, key: str) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _history(result: Any) -> list[dict[str, Any]]:
    rows = result.get("history") if isinstance(result, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, TypeError, ValueError, OverflowError):
        return True  # someone else's process, or nothing to check: do not claim it died
    return True


def _checkpoint_steps(run_dir: Path) -> list[int]:
    ray = run_dir / "ray"  # checkpoints sit in ray/ or one or two folders below it
    found = [
        ray.glob(p) for p in ("checkpoint_step*", "*/checkpoint_step*", "*/*/checkpoint_step*")
    ]
    return [int(m.group(1)) for g in found for p in g if (m := _CHECKPOINT.match(p.name))]


def _state(run_dir: Path, record: dict[str, Any] | None) -> str:
    if record is not None:
        state = record["state"]
        if state == "running" and record.get("host") == socket.gethostname():
            return "running" if _pid_alive(record.get("pid")) else "interrupted"
        return state
    if (run_dir / "metrics.json").is_file():
        return "finished"
    if (run_dir / "train_result.json").is_file() or _checkpoint_steps(run_dir):
        return "interrupted"
    return "unknown"


def _best(result: Any, train: dict[str, Any]) -> tuple[str | None, float | None]:
    name = train.get("best_metric")
    value = _section(result, "best_metrics").get(name)
    if name is None or _number(value):
        return name, value
    values = [r[name] for r in _history(result) if _number(r.get(name))]
    pick = min if train.get("best_mode") == "min" else max
    return name, pick(values) if values else None


def _test_metrics(metrics: Any) -> dict[str, float]:
    """The test split's numbers of a metrics.json: its "test" section (nested keys dotted), else
    top-level `test_*` keys. Lists (a confusion matrix) and text are left out."""
    section = _section(metrics, "test") or _section(_section(metrics, "model"), "test")
    if not section and isinstance(metrics, dict):
        section = {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}
    return {k: v for k, v in flatten(section).items() if _number(v)}


def read_run(run_dir: str | os.PathLike) -> RunInfo:
    """What one run folder says about its run."""
    run_dir = Path(run_dir)
    cfg, record = _config(run_dir), read_state(run_dir)
    result = _json(run_dir / "train_result.json")
    model = _section(cfg, "model")
    steps = [r["step"] for r in _history(result) if _number(r.get("step"))]
    steps = steps or _checkpoint_steps(run_dir)
    best_metric, best_value = _best(result, _section(cfg, "train"))
    info = RunInfo(run_dir.name, str(run_dir), model.get("task"), model.get("path"))
    info.model = info.model or model.get("preset")
    info.state, info.error = _state(run_dir, record), (record or {}).get("error")
    info.best_metric, info.best_value = best_metric, best_value
    info.test = _test_metrics(_json(run_dir / "metrics.json"))
    info.steps = int(max(steps)) if steps else None
    began, ended = (record or {}).get("started"), (record or {}).get("ended")
    if _number(began) and (_number(ended) or info.state == "running"):
        info.wall_seconds = (ended if _number(ended) else time.time()) - began
    elif isinstance(result, dict) and _number(result.get("train_seconds")):
        info.wall_seconds = result["train_seconds"]
    info.started = began if _number(began) else (run_dir / RECORD).stat().st_mtime
    return info


def list_runs(output_dir: str | os.PathLike) -> list[RunInfo]:
    """Every immediate subfolder of `output_dir` holding a config.yaml, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no output folder {root}")
    runs = [read_run(p) for p in sorted(root.iterdir()) if (p / RECORD).is_file()]
    return sorted(runs, key=lambda r: (r.started or 0.0, r.name))


def _run_dirs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    dirs = [Path(p) for p in paths]
    for d in dirs:
        if not (d / RECORD).is_file():
            raise ValueError(f"{d} is not a run folder (no {RECORD})")
    return dirs


def _names(dirs: list[Path]) -> list[str]:
    """Run names, or the paths where two output folders hold the same run name."""
    names = [d.name for d in dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in dirs]


def _final_validation(history: list[dict[str, Any]]) -> dict[str, float]:
    last: dict[str, float] = {}
    for row in history:
        last.update({k: v for k, v in row.items() if k.startswith("val_") and _number(v)})
    return last


def compare(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """{"runs": names, "config": {field: value per run} for fields that differ,
    "metrics": {"best.<metric>" | "final.<val_*>" | "test.<name>": value per run}}."""
    dirs = _run_dirs(paths)
    names = _names(dirs)
    configs = [_config(d) for d in dirs]
    fields = sorted({k for c in configs[1:] for k in differences(configs[0], c)} - IGNORED_FIELDS)
    flat = [flatten(c) for c in configs]
    rows: list[dict[str, Any]] = []
    for d in dirs:
        info = read_run(d)
        row = {f"best.{info.best_metric}": info.best_value} if info.best_metric else {}
        final = _final_validation(_history(_json(d / "train_result.json")))
        row.update({f"final.{k}": v for k, v in final.items()})
        rows.append(row | {f"test.{k}": v for k, v in info.test.items()})
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {
        "runs": names,
        "config": {f: [c.get(f) for c in flat] for f in fields},
        "metrics": {k: [row.get(k) for row in rows] for k in keys},
    }


def plot_curves(runs: Sequence[Any], out_png: str | os.PathLike) -> str | None:
    """One PNG: a panel per val_* metric (and train_loss), x = step, a line per run. `runs` are
    run folders or RunInfos. Returns the PNG's path, or None when no run has any history."""
    from raylm.eval.plots import _new_figure, _save, _series, _smooth

    dirs = [Path(getattr(r, "path", r)) for r in runs]
    results = [_json(d / "train_result.json") for d in dirs]
    histories = {n: _history(r) for n, r in zip(_names(dirs), results, strict=True)}
    seen = dict.fromkeys(k for h in histories.values() for row in h for k in row)
    keys = sorted((k for k in seen if k.startswith("val_")), key=lambda k: k != "val_loss")
    keys += ["train_loss"] if "train_loss" in seen else []
    if not keys:
        return None
    cols = min(3, len(keys))
    fig = _new_figure(4.6 * cols, 3.8 * -(-len(keys) // cols))
    axes = fig.subplots(-(-len(keys) // cols), cols, squeeze=False).flat
    for key, ax in zip(keys, axes, strict=False):  # keys first: the rest of axes stay unread
        for i, (name, history) in enumerate(histories.items()):
            xs, ys = _series(history, key)
            if key == "train_loss" and len(ys) > 30:
                ax.plot(xs, ys, color=f"C{i}", alpha=0.2, linewidth=0.8)
                ys = _smooth(ys, max(5, len(ys) // 20))
            if ys:
                marker = "o" if len(ys) <= 20 else None
                ax.plot(xs, ys, color=f"C{i}", marker=marker, markersize=3, label=name)
        ax.set(xlabel="step", ylabel=key, title=key.replace("_", " "))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    for ax in axes:  # the grid's unused panels
        ax.set_visible(False)
    fig.suptitle(f"training and validation curves of {len(histories)} runs", fontsize=12)
    return _save(fig, out_png)


def duration(seconds: float | None) -> str:
    """3m12s, 2h05m, 1d03h."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _cell(value: Any) -> str:
    """A table cell's text; brackets in names and paths are not rich markup."""
    from rich.markup import escape

    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def runs_table(runs: Sequence[RunInfo]):
    """A rich Table: name, task, model, state (coloured), best metric, steps, wall time, started."""
    from rich.table import Table

    table = Table("run", "task", "model", "state", "best", "steps", "time", "started")
    for r in runs:
        best = f"{r.best_metric} {r.best_value:.4f}" if r.best_value is not None else "-"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)) if r.started else "-"
        state = f"[{_COLOURS.get(r.state, 'dim')}]{r.state}"
        table.add_row(
            _cell(r.name), _cell(r.task), _cell(r.model), state, best, _cell(r.steps),
            duration(r.wall_seconds), started,
        )  # fmt: skip
    return table


def compare_table(result: dict[str, Any]):
    """A rich Table: the differing config fields, then the metrics, a column per run; the best
    value of each metric (lower for losses and perplexity) in bold."""
    from rich.table import Table

    table = Table("", *map(_cell, result["runs"]))
    for name, values in result["config"].items():
        table.add_row(_cell(name), *map(_cell, values))
    if not result["config"]:
        table.add_row("[dim]config", *["[dim]same"] * len(result["runs"]))
    table.add_section()
    for name, values in result["metrics"].items():
        numbers = [v for v in values if _number(v)]
        pick = min if any(w in name for w in _LOWER_IS_BETTER) else max
        best = pick(numbers) if len(numbers) > 1 else None
        cells = (f"[bold]{_cell(v)}" if v == best else _cell(v) for v in values)
        table.add_row(_cell(name), *cells)
    return table
