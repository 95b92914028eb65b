"""A finished sweep's outputs: results table (CSV + markdown), trial curves, best config + model.

Called by `raylm.tune.search.run_sweep`; every function takes plain rows, except `summarize`,
which reads Tune's ResultGrid.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

from raylm.config import dump_config
from raylm.recipe import config_from_dict
from raylm.tune.settings import TuneSettings
from raylm.tune.space import apply_sample

COLUMNS = ["trial_id", "final", "best", "epochs_run", "stopped_early", "wall_s", "status", "error"]
ERROR_CHARS = 300  # of a failed trial's error in the tables (the whole of it is in Tune's folder)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _exists(uri: str) -> bool:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri if "://" in uri else Path(uri).resolve().as_uri())
    return fs.get_file_info(f"{path}/state.json").type != pyarrow.fs.FileType.NotFound


def _kept_checkpoint(scored: list[dict], metric: str, best: float) -> str | None:
    """The trial's checkpoint that scored `best` and still exists, the latest of a tie.

    Ray Train keeps `keep_checkpoints` checkpoints by score; of equal scores it may keep a later
    one than the first report that reached the best value, so the first is not always there.
    """
    paths = [r.get("checkpoint_path") for r in scored if r[metric] == best]
    kept = [p for p in reversed(paths) if p and _exists(p)]
    return kept[0] if kept else None


def _error_line(error: BaseException | None) -> str | None:
    """The last line of a failed trial's error that says something (Ray wraps the trial's own
    exception in a traceback; its final line names the cause)."""
    if error is None:
        return None
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text[:ERROR_CHARS]


def _row(result: Any, settings: TuneSettings, epochs: int) -> tuple[dict, list[tuple]]:
    df = result.metrics_dataframe
    recs = [] if df is None else df.to_dict("records")
    metric = settings.metric
    scored = [r for r in recs if _finite(r.get(metric))]
    pick = max if settings.mode == "max" else min
    top = pick(scored, key=lambda r: r[metric]) if scored else None
    ckpt = _kept_checkpoint(scored, metric, top[metric]) if top else None
    last = recs[-1] if recs else {}
    epochs_run = max((r.get("epoch") or 0 for r in recs), default=0)
    trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
    row = {
        "trial_id": trial_id,
        **{f: v for f, v in (result.config or {}).items()},
        "final": scored[-1][metric] if scored else None,
        "best": top[metric] if top else None,
        "epochs_run": round(float(epochs_run), 2),
        "stopped_early": bool(result.error is None and recs and epochs_run < epochs),
        "wall_s": round(float(last.get("time_total_s") or 0.0), 1),
        "status": "error" if result.error else "ok",
        "error": _error_line(result.error),
        "best_checkpoint": ckpt,
    }
    curve = [(float(r["epoch"]), float(r[metric])) for r in scored if r.get("epoch") is not None]
    return row, curve


def summarize(grid: Any, settings: TuneSettings, epochs: int):
    """(rows, curves) from a Tune ResultGrid, one row per trial, sorted by trial id."""
    rows, curves = [], {}
    for result in grid:
        row, curve = _row(result, settings, epochs)
        rows.append(row)
        curves[row["trial_id"]] = curve
    rows.sort(key=lambda r: r["trial_id"])
    return rows, curves


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v).replace("|", "/")  # a cell of the markdown table


def write_tables(rows, curves, settings: TuneSettings, sweep_dir: Path) -> None:
    from raylm.eval.plots import plot_trials

    fields = list(settings.space)
    cols = ["trial_id", *fields, *COLUMNS[1:]]
    with (sweep_dir / "results.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    head = [c if c not in ("final", "best") else f"{c} {settings.metric}" for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    (sweep_dir / "results.md").write_text(
        f"### sweep {sweep_dir.name} ({settings.metric}, {settings.mode})\n\n"
        + "\n".join(lines)
        + "\n",
        encoding="utf-8",
    )
    plot_trials(curves, settings.metric, sweep_dir / "trials.png", "epoch", settings.mode)


def best_row(rows: list[dict], settings: TuneSettings) -> dict:
    scored = [r for r in rows if r["best"] is not None]
    pick = max if settings.mode == "max" else min
    return pick(scored, key=lambda r: r["best"])


def export_best(rows, settings: TuneSettings, base, orig, sweep_dir: Path, data_dir: Path) -> dict:
    """best_config.yaml (a standalone recipe), best/ (run folder for serve), best_model/."""
    import ray.train

    from raylm.models.export import export_model
    from raylm.train.checkpoint import read_state

    best = best_row(rows, settings)
    if not best["best_checkpoint"]:
        raise RuntimeError(
            f"trial {best['trial_id']} scored best but none of its checkpoints is left to export"
        )
    sample = {f: best[f] for f in settings.space}
    recipe = apply_sample(orig, sample)
    recipe["run"]["name"] = f"{sweep_dir.name}_best"
    recipe["tune"] = None
    dump_config(config_from_dict(recipe, "best_config"), sweep_dir / "best_config.yaml")

    run = apply_sample(base, sample)
    run["run"].update(name="best", output_dir=str(sweep_dir))
    run["tune"] = None
    best_dir = sweep_dir / "best"
    best_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config_from_dict(run, "best run"), best_dir / "config.yaml")
    with ray.train.Checkpoint(best["best_checkpoint"]).as_directory() as ckpt:
        history = read_state(ckpt).get("history", [])
        export_model(ckpt, data_dir / "tokenizer", best_dir / "model")
    summary = {
        "trial_id": best["trial_id"],
        "best_checkpoint": best["best_checkpoint"],
        "best_metrics": {settings.metric: best["best"]},
        "history": history,
    }
    (best_dir / "train_result.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    shutil.rmtree(sweep_dir / "best_model", ignore_errors=True)
    shutil.copytree(best_dir / "model", sweep_dir / "best_model")
    return best
