"""Generative question answering with a GPT-style decoder (examples/qa_cmrc.yaml).

preprocess: SQuAD-format files -> split by passage (a context never crosses splits) ->
            tokenizer -> prompt-masked features, the context windowed around the answer
            (raylm.data.lm_pipeline.preprocess_qa)
train:      labels only on answer tokens; token-weighted loss and perplexity on validation
evaluate:   greedy answers from the exported model on the test split, CMRC exact match / F1
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylm.tasks import causal_lm
from raylm.tasks.base import Task, ignored_fields, say

if TYPE_CHECKING:
    from raylm.config import Config


def check_config(cfg: Config) -> list[str]:
    problems = causal_lm.decoder_problems(cfg)
    if cfg.data.source != "squad":
        problems.append(
            f"data.source: model.task 'qa' reads SQuAD-format files (source 'squad'), "
            f"not '{cfg.data.source}'"
        )
    why = "the SQuAD reader keeps questions as written (it drops exact repeats itself)"
    return problems + ignored_fields(
        cfg.data, ("clean", "dedup", "labels", "also", "heldout_of"), "data", why
    )


def preprocess(cfg: Config, data_dir: Path) -> dict[str, Any]:
    from raylm.data.lm_pipeline import preprocess_qa

    return preprocess_qa(cfg, data_dir)


def evaluate(cfg: Config, run_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Generate an answer per test question with the exported model; score EM/F1."""
    from raylm.data.pipeline import read_split
    from raylm.eval.predict import answer_questions
    from raylm.eval.qa import qa_scores
    from raylm.eval.report import write_evaluation

    rows = answer_questions(
        read_split(data_dir, "test"),
        str(run_dir / "model"),
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
    em, f1, n = test["exact_match"], test["f1"], test["count"]
    say(f"test exact match {em:.4f} f1 {f1:.4f} ({n} questions)")
    write_evaluation(run_dir, {"test": test})
    return {"test": test}


TASK = Task(
    name="qa",
    description="GPT-style decoder fine-tuned to answer questions about a passage",
    best_metric=("val_loss", "min"),
    check_config=check_config,
    preprocess=preprocess,
    datasets=causal_lm.datasets,  # prompt-masked features, encoded like packed blocks
    collate=causal_lm.collate,
    evaluator=causal_lm.evaluator,
    build_model=causal_lm.build_model,
    skeleton=causal_lm.skeleton,
    evaluate=evaluate,
    serve_with="generator",
    endpoints=frozenset({"complete", "qa"}),
)
