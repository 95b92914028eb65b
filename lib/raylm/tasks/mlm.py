"""Masked-LM pretraining of a BERT-style encoder (examples/bert_pretrain_zh.yaml).

preprocess: clean -> dedup -> split (raylm.data.pipeline), then documents tokenized (optionally
            segmented into words by jieba) and packed into [CLS]-led blocks (raylm.data.mlm)
train:      blocks masked in the loop's collate, a new mask every epoch (15%: 80% [MASK], 10%
            random, 10% kept; whole words with data.mlm.whole_word); the prediction head runs
            on the masked positions alone (raylm.train.lm_loss); masked-token accuracy and
            perplexity on validation
evaluate:   the same two figures of the exported model on the test blocks
export:     a `...ForMaskedLM` folder; `model.path` to it fine-tunes its encoder for another
            task (classification loads it with a fresh head)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylm.tasks.base import RunSpec, Task, ignored_fields, say

if TYPE_CHECKING:
    from raylm.config import Config, ModelConfig


def check_config(cfg: Config) -> list[str]:
    problems = []
    if cfg.data.tokenizer.path is None and cfg.data.tokenizer.kind != "wordpiece":
        problems.append("data.tokenizer.kind: masked LM needs 'wordpiece' (it has [MASK])")
    if cfg.data.source == "squad":
        problems.append("data.source: 'squad' holds questions (task: qa), not documents")
    if cfg.train.best_metric in ("val_accuracy", "val_precision", "val_recall", "val_f1"):
        problems.append(
            f"train.best_metric: {cfg.train.best_metric} is a classification metric "
            "(masked LM reports val_loss, val_masked_accuracy, val_hidden_accuracy, val_perplexity)"
        )
    why = "masked-LM pretraining reads the text alone"
    problems += ignored_fields(cfg.data, ("labels", "qa"), "data", why)
    problems += ignored_fields(cfg.run, ("qa",), "run", why)
    problems += ignored_fields(
        cfg.run,
        ("baseline",),
        "run",
        "it is the classifiers' TF-IDF baseline (a masked LM always reports its unigram baseline)",
    )
    return problems + ignored_fields(cfg.run, ("max_new_tokens",), "run", "it generates nothing")


def preprocess(cfg: Config, data_dir: Path) -> dict[str, Any]:
    import json

    from raylm.data.mlm import pack_mlm
    from raylm.data.pipeline import preprocess as clean_dedup_split

    stats = clean_dedup_split(cfg, data_dir)
    if stats["splits"]["train"] == 0:  # nothing to pack; stages.preprocess refuses it
        return stats
    stats["encoded"] = pack_mlm(cfg, data_dir)
    stats["mlm"] = cfg.data.mlm.model_dump()
    (data_dir / "stats.json").write_text(
        json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return stats


def datasets(cfg: Config, data_dir: Path) -> dict[str, Any]:
    from raylm.data.lm_pipeline import read_encoded

    return {s: read_encoded(data_dir, s) for s in ("train", "validation")}


def collate(batch: dict[str, Any], spec: RunSpec, seed: int) -> dict[str, Any]:
    from raylm.data.mlm import collate_mlm

    if spec.mask_id is None:
        raise ValueError("masked LM needs a tokenizer with a [MASK] token")
    return collate_mlm(batch, spec.pad_id, spec.mask_id, spec.vocab_size, seed, spec.mask_prob)


def evaluator(spec: RunSpec) -> Any:
    from raylm.eval.evaluators import MaskedLMEvaluator

    return MaskedLMEvaluator()


def build_model(
    model: ModelConfig,
    vocab_size: int,
    num_labels: int = 2,
    pad_id: int = 0,
    eos_id: int | None = None,
    id2label: dict[int, str] | None = None,
) -> Any:
    from raylm.models.build import masked_lm

    return masked_lm(model, vocab_size, pad_id)


def skeleton(model: ModelConfig, vocab_size: int, num_labels: int = 2, pad_id: int = 0) -> Any:
    from raylm.models.build import masked_lm_skeleton

    return masked_lm_skeleton(model, vocab_size, pad_id)


def evaluate(cfg: Config, run_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Masked-token accuracy and perplexity of the exported model on the test blocks, masked
    with train.seed (as validation is), beside the unigram baseline counted on the training
    blocks (raylm.eval.mlm_baseline) on the same masks."""
    from transformers import AutoConfig

    from raylm.data.lm_pipeline import read_encoded
    from raylm.eval.predict import masked_lm_scores, unigram_baseline
    from raylm.eval.report import write_evaluation

    model_dir = run_dir / "model"
    vocab = AutoConfig.from_pretrained(str(model_dir)).vocab_size
    logp = unigram_baseline(read_encoded(data_dir, "train"), vocab)
    scores = masked_lm_scores(
        read_encoded(data_dir, "test"), str(model_dir), cfg.train.seed, cfg.data.mlm.mask_prob,
        unigram_logp=logp,
    )  # fmt: skip
    test, base = scores["model"], scores["baseline"]
    say(
        f"test masked-token accuracy {test['masked_accuracy']:.4f} (unigram baseline "
        f"{base['masked_accuracy']:.4f}), where the input hides the token "
        f"{test['hidden_accuracy']:.4f} ({base['hidden_accuracy']:.4f}), perplexity "
        f"{test['perplexity']:.2f} ({base['perplexity']:.2f}); {test['tokens']:.0f} masked tokens"
    )
    write_evaluation(run_dir, {"test": test, "baseline": {"test": base}})
    return {"test": test, "baseline": {"test": base}}


TASK = Task(
    name="mlm",
    description="BERT-style encoder pretrained by masked-language modelling",
    best_metric=("val_loss", "min"),
    check_config=check_config,
    preprocess=preprocess,
    datasets=datasets,
    collate=collate,
    evaluator=evaluator,
    build_model=build_model,
    skeleton=skeleton,
    evaluate=evaluate,
    serve_with=None,
    endpoints=frozenset(),
    predicts=None,
    labelled_loss=True,  # the head runs on the masked 15% alone
)
