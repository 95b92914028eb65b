"""Causal-LM pretraining of a GPT-style decoder (examples/pretrain_zh.yaml).

preprocess: clean -> dedup -> split (raylm.data.pipeline), then documents joined with EOS and
            packed into blocks of data.max_length tokens (raylm.data.lm_pipeline)
train:      packed blocks; token-weighted loss and perplexity on validation
evaluate:   perplexity of the exported model over the packed test blocks
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylm.tasks.base import RunSpec, Task, ignored_fields, say

if TYPE_CHECKING:
    from raylm.config import Config, ModelConfig


def decoder_problems(cfg: Config) -> list[str]:
    """Rules every GPT-style task shares (causal LM and generative QA)."""
    problems = []
    if cfg.data.tokenizer.path is None and cfg.data.tokenizer.kind != "bytelevel_bpe":
        problems.append(
            "data.tokenizer.kind: GPT-style tasks need 'bytelevel_bpe' (it has an EOS token)"
        )
    if cfg.train.best_metric in ("val_accuracy", "val_precision", "val_recall", "val_f1"):
        problems.append(
            f"train.best_metric: {cfg.train.best_metric} is a classification metric "
            "(language models report val_loss, val_perplexity)"
        )
    problems += ignored_fields(cfg.run, ("baseline",), "run", "the baseline is a classifier's")
    problems += ignored_fields(cfg.data, ("qa",), "data", "extractive QA windows only")
    return problems + ignored_fields(cfg.data, ("mlm",), "data", "a decoder masks nothing")


def check_config(cfg: Config) -> list[str]:
    problems = decoder_problems(cfg)
    if cfg.data.source == "squad":
        problems.append("data.source: 'squad' holds questions (task: qa), not documents")
    why = "a causal LM trains on the text alone"
    problems += ignored_fields(cfg.run, ("qa",), "run", "it answers no questions")
    return problems + ignored_fields(cfg.data, ("labels",), "data", why)


def preprocess(cfg: Config, data_dir: Path) -> dict[str, Any]:
    import json

    from raylm.data import lm_pipeline
    from raylm.data.pipeline import preprocess as clean_dedup_split

    stats = clean_dedup_split(cfg, data_dir)
    if stats["splits"]["train"] == 0:  # no tokenizer to pack with; stages.preprocess refuses it
        return stats
    stats["encoded"] = lm_pipeline.pack_causal_lm(cfg, data_dir)
    (data_dir / "stats.json").write_text(
        json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return stats


def datasets(cfg: Config, data_dir: Path) -> dict[str, Any]:
    from raylm.data.lm_pipeline import read_encoded

    return {s: read_encoded(data_dir, s) for s in ("train", "validation")}


def collate(batch: dict[str, Any], spec: RunSpec, seed: int) -> dict[str, Any]:
    from raylm.data.collate import collate_lm

    return collate_lm(batch, spec.pad_id)


def evaluator(spec: RunSpec) -> Any:
    from raylm.eval.evaluators import LMEvaluator

    return LMEvaluator()


def build_model(
    model: ModelConfig,
    vocab_size: int,
    num_labels: int = 2,
    pad_id: int = 0,
    eos_id: int | None = None,
    id2label: dict[int, str] | None = None,
) -> Any:
    from raylm.models.build import causal_lm

    return causal_lm(model, vocab_size, pad_id, eos_id)


def skeleton(model: ModelConfig, vocab_size: int, num_labels: int = 2, pad_id: int = 0) -> Any:
    from raylm.models.build import causal_lm_skeleton

    return causal_lm_skeleton(model, vocab_size, pad_id)


def evaluate(cfg: Config, run_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Test perplexity of the exported model over the packed test blocks."""
    from raylm.data.lm_pipeline import read_encoded
    from raylm.eval.predict import perplexity_of
    from raylm.eval.report import write_evaluation

    test = perplexity_of(read_encoded(data_dir, "test"), str(run_dir / "model"))
    say(f"test perplexity {test['perplexity']:.2f} (loss {test['loss']:.4f})")
    write_evaluation(run_dir, {"test": test})
    return {"test": test}


TASK = Task(
    name="causal_lm",
    description="GPT-style decoder pretrained on packed documents",
    best_metric=("val_loss", "min"),
    check_config=check_config,
    preprocess=preprocess,
    datasets=datasets,
    collate=collate,
    evaluator=evaluator,
    build_model=build_model,
    skeleton=skeleton,
    evaluate=evaluate,
    serve_with="generator",
    endpoints=frozenset({"complete", "qa"}),
    predicts="complete",
)
