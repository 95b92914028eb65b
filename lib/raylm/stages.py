"""The recipe's stages, each one function of a Config: preprocess -> train -> export -> evaluate.
What a stage does for the recipe's `model.task` is the task module's (raylm.tasks).

    raylm run examples/sentiment_zh.yaml            # all stages
    raylm preprocess|train|export|evaluate CONFIG  # one stage (same run folder)

Everything a stage writes goes under `<run.output_dir>/<run.name>/`:
    config.yaml, data/ (splits, stats.json, rejects.jsonl, tokenizer/), ray/ (checkpoints),
    train_result.json, model/ (exported), metrics.json, report.md, *.png, run.json (state),
    tensorboard/, tracking.json (with run.tracking.mlflow)
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any

from raylm.config import Config
from raylm.fsutil import replace_folder
from raylm.plan import check_layout
from raylm.preflight import check_run
from raylm.runfolder import record_config
from raylm.runstate import mark_running, recorded
from raylm.tasks import get_task
from raylm.tasks.base import say, train_examples
from raylm.tracking import log_results


def run_dir_of(cfg: Config) -> Path:
    path = cfg.run.run_dir.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir_of(cfg: Config) -> Path:
    return cfg.run.data_path.resolve()


@recorded("preprocess")
def preprocess(cfg: Config) -> dict[str, Any]:
    """The task's preprocessing (Ray Data): clean/dedup/split + tokenizer, then its encoding."""
    from raylm.data.inputs import check_inputs
    from raylm.runtime import ensure_ray

    # A missing path or an unreadable file fails here, before the run folder records a config
    # naming it (the corrected relaunch would be "another config") and before Ray starts.
    check_run(cfg)
    check_layout(cfg)
    check_inputs(cfg.data)
    run_dir, data_dir = run_dir_of(cfg), data_dir_of(cfg)
    record_config(cfg, run_dir)
    mark_running(run_dir)
    ensure_ray(cfg.run)
    # Into a staging folder, swapped in only once complete: a failed or empty preprocessing
    # leaves the previous data (and the checkpoints trained on it) as they were.
    staging = data_dir.with_name(data_dir.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        stats = get_task(cfg.model.task).preprocess(cfg, staging)
    except BaseException:
        _discard(staging, run_dir)
        raise
    if train_examples(stats) == 0:
        raise _nothing_to_train(stats, _discard(staging, run_dir), data_dir)
    replace_folder(staging, data_dir)
    return stats


def _discard(staging: Path, run_dir: Path) -> Path:
    """Drop a failed preprocessing; keep its rejects (why records were dropped) and its stats
    (how many, by reason) to read."""
    rejects = run_dir / "rejects.failed.jsonl"
    rejects.unlink(missing_ok=True)  # an older failure's rejects would be taken for this one's
    (run_dir / "stats.failed.json").unlink(missing_ok=True)
    for name, kept in (("rejects.jsonl", rejects), ("stats.json", run_dir / "stats.failed.json")):
        if (staging / name).is_file():
            shutil.copy2(staging / name, kept)
    shutil.rmtree(staging, ignore_errors=True)
    return rejects


def _nothing_to_train(stats: dict[str, Any], rejects: Path, data_dir: Path) -> ValueError:
    """The error of a preprocessing that kept no training example: counts by reason, the first
    rejects by file and line, and where the rest are."""
    rejected = stats.get("rejected", {})
    hint = ""
    if "invalid_utf8" in rejected:
        hint = "; input files must be UTF-8 (convert GBK with iconv -f GBK -t UTF-8)"
    return ValueError(
        f"preprocessing left 0 training examples ({stats.get('input_records', 0)} input "
        f"records, rejected: {rejected}{_first_rejects(rejects)}{hint}; each rejected record "
        f"and its reason: {rejects}); the previous data in {data_dir}, if any, is kept"
    )


def _first_rejects(rejects: Path, n: int = 3) -> str:
    """`, first: file:line reason, ...` of the first rejected records, so that the error itself
    says where to look (line 0 or none: the file as a whole)."""
    if not rejects.is_file():
        return ""
    shown = []
    with rejects.open(encoding="utf-8") as f:
        for raw in itertools.islice(f, n):
            rec = json.loads(raw)
            line = rec.get("line") or 0
            shown.append(f"{rec.get('source')}{f':{line}' if line > 0 else ''} {rec['reason']}")
    return f", first: {', '.join(shown)}" if shown else ""


@recorded("train")
def train(cfg: Config) -> dict[str, Any]:
    """Train (or resume) and record the best checkpoint in train_result.json."""
    from raylm.train.driver import fit

    check_run(cfg)
    check_layout(cfg)
    run_dir = run_dir_of(cfg)
    record_config(cfg, run_dir)
    mark_running(run_dir)
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


@recorded("export")
def export(cfg: Config, checkpoint: str | None = None) -> Path:
    """Copy the best (or given) checkpoint's model + tokenizer into <run>/model."""
    from raylm.models.export import add_model_meta, export_model

    run_dir = run_dir_of(cfg)
    if checkpoint is None:
        result = run_dir / "train_result.json"
        if not result.is_file():
            raise FileNotFoundError(f"{result} not found: run `raylm train` for this config first")
        checkpoint = json.loads(result.read_text(encoding="utf-8"))["best_checkpoint"]
    mark_running(run_dir)
    merge = cfg.model.lora.merge if cfg.model.lora else True
    out = export_model(checkpoint, data_dir_of(cfg) / "tokenizer", run_dir / "model", merge)
    # How the training texts were prepared travels with the model: `raylm predict` prepares
    # its inputs the same way.
    prep = {"clean": cfg.data.clean.model_dump(mode="json"), "convert": cfg.data.convert,
            "text_column": cfg.data.text_column,
            "constrain_to_context": cfg.run.qa.constrain_to_context}  # fmt: skip
    add_model_meta(out, preprocess=prep)
    say(f"exported model to {out}")
    return out


@recorded("evaluate")
def evaluate(cfg: Config) -> dict[str, Any]:
    """The task's test-split evaluation of the exported model: metrics.json, report.md, plots."""
    from raylm.runtime import ensure_ray
    from raylm.train.driver import read_stats

    run_dir, data_dir = run_dir_of(cfg), data_dir_of(cfg)
    for needed, stage in ((data_dir / "stats.json", "preprocess"), (run_dir / "model", "export")):
        if not needed.exists():  # before Ray starts: say which stage is missing
            raise FileNotFoundError(
                f"{needed} not found: run `raylm {stage}` for this config first"
            )
    if read_stats(data_dir).get("splits", {}).get("test") == 0:  # e.g. a pretraining's split
        say(f"evaluate: the test split of {data_dir} is empty (data.split.test "
            f"{cfg.data.split.test}): nothing to score")  # fmt: skip
        return {}
    mark_running(run_dir)
    ensure_ray(cfg.run)
    metrics = get_task(cfg.model.task).evaluate(cfg, run_dir, data_dir)
    log_results(cfg, data_dir)  # to the run's MLflow run, with run.tracking.mlflow
    return metrics


@recorded("run")
def run(cfg: Config) -> dict[str, Any]:
    """All stages in order on one Ray instance."""
    t0 = time.perf_counter()
    preprocess(cfg)
    train(cfg)
    export(cfg)
    metrics = evaluate(cfg)
    say(f"done in {time.perf_counter() - t0:.0f}s: {run_dir_of(cfg)}")
    return metrics
