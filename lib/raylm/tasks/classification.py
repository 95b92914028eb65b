"""Sequence classification with a BERT-style encoder (examples/sentiment_zh.yaml).

preprocess: clean -> dedup -> split by text hash -> tokenizer (raylm.data.pipeline)
train:      rows encoded on the fly (input_ids, labels); confusion matrix + loss on validation
evaluate:   Ray Data batch inference on the test split beside a TF-IDF + logistic-regression
            baseline fitted on the same train split; confusion matrix and learning curve
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylm.tasks.base import RunSpec, Task, ignored_fields, say

if TYPE_CHECKING:
    from raylm.config import Config, ModelConfig


def check_config(cfg: Config) -> list[str]:
    problems = []
    if cfg.data.label_column is None:
        problems.append("data.label_column: model.task 'classification' needs a label column")
    if cfg.data.source == "squad":
        problems.append("data.source: 'squad' holds questions, not labelled texts (task: qa)")
    if cfg.train.best_metric.startswith("val_perplexity"):
        problems.append("train.best_metric: val_perplexity does not apply to classification")
    problems += ignored_fields(
        cfg.run, ("max_new_tokens",), "run", "classification generates nothing"
    )
    problems += ignored_fields(cfg.data, ("also",), "data", "unlabelled sources have no label")
    problems += ignored_fields(cfg.data, ("qa",), "data", "it reads no passages")
    problems += ignored_fields(cfg.run, ("qa",), "run", "it answers no questions")
    return problems + ignored_fields(cfg.data, ("mlm",), "data", "it masks nothing")


def preprocess(cfg: Config, data_dir: Path) -> dict[str, Any]:
    from raylm.data.pipeline import preprocess as clean_dedup_split

    return clean_dedup_split(cfg, data_dir)


def datasets(cfg: Config, data_dir: Path) -> dict[str, Any]:
    from raylm.data.pipeline import encode_classification, read_split

    tok_dir = data_dir / "tokenizer"
    return {
        s: encode_classification(read_split(data_dir, s), tok_dir, cfg.data.max_length)
        for s in ("train", "validation")
    }


def collate(batch: dict[str, Any], spec: RunSpec, seed: int) -> dict[str, Any]:
    from raylm.data.collate import collate_classification

    return collate_classification(batch, spec.pad_id)


def evaluator(spec: RunSpec) -> Any:
    from raylm.eval.evaluators import ClassificationEvaluator

    return ClassificationEvaluator(spec.num_labels)


def build_model(
    model: ModelConfig,
    vocab_size: int,
    num_labels: int = 2,
    pad_id: int = 0,
    eos_id: int | None = None,
    id2label: dict[int, str] | None = None,
) -> Any:
    from raylm.models.build import sequence_classifier

    return sequence_classifier(model, vocab_size, num_labels, pad_id, id2label)


def skeleton(model: ModelConfig, vocab_size: int, num_labels: int = 2, pad_id: int = 0) -> Any:
    from raylm.models.build import sequence_classifier_skeleton

    return sequence_classifier_skeleton(model, vocab_size, num_labels, pad_id)


def _baseline(data_dir: Path, test_texts: list[str], test_labels: list[int], n: int):
    from raylm.data.pipeline import read_split
    from raylm.eval.baseline import fit_baseline

    train = read_split(data_dir, "train").select_columns(["text", "label"]).to_pandas()
    result = fit_baseline(
        list(train["text"]), list(train["label"]), {"test": (test_texts, test_labels)}, n
    )
    return {**result["metrics"]["test"], "fit_seconds": round(result["fit_seconds"], 2)}


def evaluate(cfg: Config, run_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Test-split metrics of the exported model (Ray Data batch inference) beside the baseline."""
    import json

    from raylm.data.pipeline import read_split
    from raylm.eval.metrics import classification_metrics
    from raylm.eval.predict import predict_classification
    from raylm.eval.report import write_evaluation

    stats = json.loads((data_dir / "stats.json").read_text(encoding="utf-8"))
    labels = stats.get("labels") or []
    test = read_split(data_dir, "test").select_columns(["text", "label"])
    rows = predict_classification(test, str(run_dir / "model"), cfg.data.max_length).to_pandas()
    y_true, y_pred = rows["label"].to_numpy(), rows["pred"].to_numpy()
    n = max(len(labels), 2)
    test_m = classification_metrics(y_true, y_pred, n)
    rows[["text", "label", "pred", "prob"]].to_json(
        run_dir / "test_predictions.jsonl", orient="records", lines=True, force_ascii=False
    )
    metrics: dict[str, Any] = {"test": test_m}
    if cfg.run.baseline:
        say("fitting the TF-IDF + logistic regression baseline on the same split")
        metrics["baseline"] = {"test": _baseline(data_dir, list(rows["text"]), list(y_true), n)}
    write_evaluation(run_dir, metrics, test_m.get("confusion_matrix", []), labels)
    shown = f"test accuracy {test_m['accuracy']:.4f} f1 {test_m['f1']:.4f}"
    if "baseline" in metrics:
        shown += f" | baseline accuracy {metrics['baseline']['test']['accuracy']:.4f}"
    say(shown)
    return metrics


TASK = Task(
    name="classification",
    description="BERT-style encoder + classification head on labelled texts",
    best_metric=("val_f1", "max"),
    check_config=check_config,
    preprocess=preprocess,
    datasets=datasets,
    collate=collate,
    evaluator=evaluator,
    build_model=build_model,
    skeleton=skeleton,
    evaluate=evaluate,
    serve_with="classifier",
    endpoints=frozenset({"classify"}),
    predicts="classify",
)
