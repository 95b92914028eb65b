"""Generative question answering with a GPT-style decoder (examples/qa_cmrc.yaml).

preprocess: SQuAD-format files -> split by passage (a context never crosses splits) ->
            tokenizer -> prompt-masked features, the context windowed around the answer
            (raylm.data.lm_pipeline.preprocess_qa)
train:      labels only on answer tokens; token-weighted loss and perplexity on validation
evaluate:   greedy answers from the exported model on the test split, free and constrained to
            spans of the context (`run.qa.constrain_to_context` picks which is `test`), CMRC
            exact match / F1 of both beside the overlap baseline (raylm.eval.qa_baseline)
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
    """Generate an answer per test question with the exported model, free and constrained to
    the context (raylm.constrain); score EM/F1 of both beside the overlap baseline."""
    import json

    from raylm.data.pipeline import read_split
    from raylm.eval.predict import answer_questions
    from raylm.eval.qa import qa_scores
    from raylm.eval.qa_baseline import overlap_answer
    from raylm.eval.report import write_evaluation

    test_rows = read_split(data_dir, "test")
    rows = answer_questions(
        test_rows, str(run_dir / "model"), cfg.data.max_length, cfg.run.max_new_tokens
    ).to_pandas()
    asked = test_rows.select_columns(["id", "question", "context"]).iter_rows()
    asked = {r["id"]: r for r in asked}
    golds = {i: [str(a) for a in ans] for i, ans in zip(rows["id"], rows["answers"], strict=True)}
    chosen = "constrained" if cfg.run.qa.constrain_to_context else "free"
    other = "free" if chosen == "constrained" else "constrained"
    baseline = {i: overlap_answer(asked[i]["question"], asked[i]["context"])[0] for i in golds}
    with (run_dir / "test_predictions.jsonl").open("w", encoding="utf-8") as out:
        for row in rows.itertuples(index=False):
            record = {
                "id": row.id, "question": asked[row.id]["question"], "answers": golds[row.id],
                "prediction": getattr(row, chosen), other: getattr(row, other),
                "baseline": baseline[row.id], "context_window": row.context_window,
                "reject_reason": row.reject_reason,
            }  # fmt: skip
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    scores = {mode: qa_scores(dict(zip(rows["id"], rows[mode], strict=True)), golds)
              for mode in (chosen, other)}  # fmt: skip
    test = scores[chosen]
    test["prompt_too_long"] = int((rows["reject_reason"] != "").sum())
    base = qa_scores(baseline, golds)
    other_name = "unconstrained" if other == "free" else "constrained"
    metrics = {"test": test, other_name: {"test": scores[other]}, "baseline": {"test": base}}
    say(
        f"test exact match {test['exact_match']:.4f} f1 {test['f1']:.4f} ({chosen}, "
        f"{test['count']} questions) | {other_name} f1 {scores[other]['f1']:.4f} | baseline "
        f"f1 {base['f1']:.4f}"
    )
    write_evaluation(run_dir, metrics)
    return metrics


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
    predicts="answer",
    labelled_loss=True,
)
