"""The recipe's stages, each one function of a Config: preprocess -> train -> export -> evaluate.

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


def run_dir_of(cfg: Config) -> Path:
    path = cfg.run.run_dir.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir_of(cfg: Config) -> Path:
    return cfg.run.data_path.resolve()


def _say(msg: str) -> None:
    print(f"[raylm] {msg}", flush=True)


def preprocess(cfg: Config) -> dict[str, Any]:
    """Clean/dedup/split (+ tokenizer); GPT-style tasks also pack or prompt-mask the splits."""
    from raylm.data import lm_pipeline
    from raylm.data.pipeline import preprocess as run_pipeline
    from raylm.runtime import ensure_ray

    run_dir, data_dir = run_dir_of(cfg), data_dir_of(cfg)
    dump_config(cfg, run_dir / "config.yaml")
    ensure_ray(cfg.run)
    if cfg.model.task == "qa":
        return lm_pipeline.preprocess_qa(cfg, data_dir)
    stats = run_pipeline(cfg, data_dir)
    if cfg.model.task == "causal_lm":
        stats["encoded"] = lm_pipeline.pack_causal_lm(cfg, data_dir)
        (data_dir / "stats.json").write_text(
            json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
    return stats


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
    _say(
        f"best checkpoint: {summary['best_checkpoint']} "
        f"({cfg.train.best_metric}={outcome.best_metrics.get(cfg.train.best_metric)})"
    )
    return summary


def export(cfg: Config, checkpoint: str | None = None) -> Path:
    """Copy the best (or given) checkpoint's model + tokenizer into <run>/model."""
    from raylm.train.checkpoint import export_model

    run_dir = run_dir_of(cfg)
    if checkpoint is None:
        result = run_dir / "train_result.json"
        if not result.is_file():
            raise FileNotFoundError(f"{result} not found: run `raylm train` for this config first")
        checkpoint = json.loads(result.read_text(encoding="utf-8"))["best_checkpoint"]
    out = export_model(checkpoint, data_dir_of(cfg) / "tokenizer", run_dir / "model")
    _say(f"exported model to {out}")
    return out


def _plots(run_dir: Path, history: list[dict], cm: list[list[int]], labels: list[str]) -> None:
    from raylm.eval.plots import plot_confusion_matrix, plot_learning_curve

    if history:
        plot_learning_curve(history, run_dir / "learning_curve.png", title=run_dir.name)
    if cm:
        plot_confusion_matrix(cm, labels, run_dir / "confusion_matrix.png")


def _baseline(cfg: Config, test_texts: list[str], test_labels: list[int], n: int):
    from raylm.data.pipeline import read_split
    from raylm.eval.baseline import fit_baseline

    train = read_split(data_dir_of(cfg), "train").select_columns(["text", "label"]).to_pandas()
    result = fit_baseline(
        list(train["text"]), list(train["label"]), {"test": (test_texts, test_labels)}, n
    )
    return {**result["metrics"]["test"], "fit_seconds": round(result["fit_seconds"], 2)}


def evaluate_classification(cfg: Config) -> dict[str, Any]:
    """Test-split metrics of the exported model (Ray Data batch inference) beside the baseline."""
    from raylm.data.pipeline import read_split
    from raylm.eval.metrics import classification_metrics
    from raylm.eval.predict import predict_classification
    from raylm.eval.report import write_report
    from raylm.runtime import ensure_ray

    run_dir = run_dir_of(cfg)
    ensure_ray(cfg.run)
    stats = json.loads((data_dir_of(cfg) / "stats.json").read_text(encoding="utf-8"))
    labels = stats.get("labels") or []
    test = read_split(data_dir_of(cfg), "test").select_columns(["text", "label"])
    rows = predict_classification(test, str(run_dir / "model"), cfg.data.max_length).to_pandas()
    y_true, y_pred = rows["label"].to_numpy(), rows["pred"].to_numpy()
    n = max(len(labels), 2)
    test_m = classification_metrics(y_true, y_pred, n)
    rows[["text", "label", "pred", "prob"]].to_json(
        run_dir / "test_predictions.jsonl", orient="records", lines=True, force_ascii=False
    )
    metrics: dict[str, Any] = {"test": test_m}
    if cfg.run.baseline:
        _say("fitting the TF-IDF + logistic regression baseline on the same split")
        metrics["baseline"] = {"test": _baseline(cfg, list(rows["text"]), list(y_true), n)}
    history = _history(run_dir)
    _plots(run_dir, history, test_m.get("confusion_matrix", []), labels)
    write_report(run_dir, metrics)
    _say(
        f"test accuracy {test_m['accuracy']:.4f} f1 {test_m['f1']:.4f}"
        + (
            f" | baseline accuracy {metrics['baseline']['test']['accuracy']:.4f}"
            if "baseline" in metrics
            else ""
        )
    )
    return metrics


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "train_result.json"
    return json.loads(path.read_text(encoding="utf-8")).get("history", []) if path.is_file() else []


def evaluate_lm(cfg: Config) -> dict[str, Any]:
    """Causal LM: test perplexity over packed blocks. QA: generate answers, score EM/F1."""
    from raylm.data.lm_pipeline import read_encoded
    from raylm.data.pipeline import read_split
    from raylm.eval.predict import answer_questions, perplexity_of
    from raylm.eval.report import write_report
    from raylm.runtime import ensure_ray

    run_dir, data_dir, model_dir = run_dir_of(cfg), data_dir_of(cfg), run_dir_of(cfg) / "model"
    ensure_ray(cfg.run)
    if cfg.model.task == "causal_lm":
        test = perplexity_of(read_encoded(data_dir, "test"), str(model_dir))
        _say(f"test perplexity {test['perplexity']:.2f} (loss {test['loss']:.4f})")
    else:
        from raylm.eval.qa import qa_scores

        rows = answer_questions(
            read_split(data_dir, "test"),
            str(model_dir),
            cfg.data.max_length,
            cfg.run.max_new_tokens,
        ).to_pandas()
        rows.to_json(
            run_dir / "test_predictions.jsonl", orient="records", lines=True, force_ascii=False
        )
        preds = dict(zip(rows["id"], rows["prediction"], strict=True))
        golds = {i: list(a) for i, a in zip(rows["id"], rows["answers"], strict=True)}
        test = qa_scores(preds, golds)
        test["prompt_too_long"] = int((rows["reject_reason"] != "").sum())
        _say(
            f"test exact match {test['exact_match']:.4f} f1 {test['f1']:.4f} "
            f"({test['count']} questions)"
        )
    _plots(run_dir, _history(run_dir), [], [])
    write_report(run_dir, {"test": test})
    return {"test": test}


def evaluate(cfg: Config) -> dict[str, Any]:
    if cfg.model.task == "classification":
        return evaluate_classification(cfg)
    return evaluate_lm(cfg)


def run(cfg: Config) -> dict[str, Any]:
    """All stages in order on one Ray instance."""
    t0 = time.perf_counter()
    preprocess(cfg)
    train(cfg)
    export(cfg)
    metrics = evaluate(cfg)
    _say(f"done in {time.perf_counter() - t0:.0f}s: {run_dir_of(cfg)}")
    return metrics
