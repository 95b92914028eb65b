"""The recipe's stages, each one function of a Config: preprocess -> train -> export -> evaluate.
What a stage does for the recipe's `model.task` is the task module's (raylm.tasks).

    raylm run examples/sentiment_zh.yaml            # all stages
    raylm preprocess|train|export|evaluate CONFIG  # one stage (same run folder)

Everything a stage writes goes under `<run.output_dir>/<run.name>/`:
    config.yaml, data/ (splits, stats.json, rejects.jsonl, tokenizer/), ray/ (checkpoints),
    train_result.json, model/ (exported), metrics.json, report.md, *.png
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from raylm.config import Config, dump_config
from raylm.tasks import get_task
from raylm.tasks.base import say


def run_dir_of(cfg: Config) -> Path:
    path = cfg.run.run_dir.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir_of(cfg: Config) -> Path:
    return cfg.run.data_path.resolve()


def preprocess(cfg: Config) -> dict[str, Any]:
    """The task's preprocessing (Ray Data): clean/dedup/split + tokenizer, then its encoding."""
    from raylm.runtime import ensure_ray

    run_dir, data_dir = run_dir_of(cfg), data_dir_of(cfg)
    dump_config(cfg, run_dir / "config.yaml")
    ensure_ray(cfg.run)
    data_dir.mkdir(parents=True, exist_ok=True)
    return get_task(cfg.model.task).preprocess(cfg, data_dir)


def train(cfg: Config) -> dict[str, Any]:
    """Train (or resume) and record the best checkpoint in train_result.json."""
    from raylm.train.driver import fit

    run_dir = run_dir_of(cfg)
    dump_config(cfg, run_dir / "config.yaml")
    t0 = time.perf_counter()
    outcome = fit(cfg)
    summary = {
        "best_checkpoint": outcome.best_checkpoint.path,
        "best_metrics": outcome.best_metrics,
        "latest_metrics": outcome.latest_metrics,
        "history": outcome.history,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    (run_dir / "train_result.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    say(
        f"best checkpoint: {summary['best_checkpoint']} "
        f"({cfg.train.best_metric}={outcome.best_metrics.get(cfg.train.best_metric)})"
    )
    return summary


def export(cfg: Config, checkpoint: str | None = None) -> Path:
    """Copy the best (or given) checkpoint's model + tokenizer into <run>/model."""
    from raylm.models.export import export_model

    run_dir = run_dir_of(cfg)
    if checkpoint is None:
        result = run_dir / "train_result.json"
        if not result.is_file():
            raise FileNotFoundError(f"{result} not found: run `raylm train` for this config first")
        checkpoint = json.loads(result.read_text(encoding="utf-8"))["best_checkpoint"]
    out = export_model(checkpoint, data_dir_of(cfg) / "tokenizer", run_dir / "model")
    say(f"exported model to {out}")
    return out


def evaluate(cfg: Config) -> dict[str, Any]:
    """The task's test-split evaluation of the exported model: metrics.json, report.md, plots."""
    from raylm.runtime import ensure_ray

    run_dir, data_dir = run_dir_of(cfg), data_dir_of(cfg)
    for needed, stage in ((data_dir / "stats.json", "preprocess"), (run_dir / "model", "export")):
        if not needed.exists():  # before Ray starts: say which stage is missing
            raise FileNotFoundError(
                f"{needed} not found: run `raylm {stage}` for this config first"
            )
    ensure_ray(cfg.run)
    return get_task(cfg.model.task).evaluate(cfg, run_dir, data_dir)


def run(cfg: Config) -> dict[str, Any]:
    """All stages in order on one Ray instance."""
    t0 = time.perf_counter()
    preprocess(cfg)
    train(cfg)
    export(cfg)
    metrics = evaluate(cfg)
    say(f"done in {time.perf_counter() - t0:.0f}s: {run_dir_of(cfg)}")
    return metrics
