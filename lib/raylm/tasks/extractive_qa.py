"""Extractive question answering with a BERT-style encoder (examples/qa_extractive_zh.yaml).

preprocess: SQuAD-format files (OpenCC-converted with `data.convert`) -> split by passage (a
            context never crosses splits) -> cloze questions on the training passages
            (`data.qa.cloze_questions`, raylm.data.cloze) -> tokenizer -> windows over each
            context with the answer's start/end token as targets (raylm.data.extractive_qa)
train:      start/end cross-entropy (`...ForQuestionAnswering` heads); validation loss and the
            share of answer-holding windows whose start and end are both exactly right
evaluate:   every test question answered by the exported model (windows, n-best decoding:
            raylm.span_reader), CMRC exact match / F1, beside the non-neural overlap baseline
            (raylm.eval.qa_baseline) on the same questions
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylm.tasks.base import RunSpec, Task, ignored_fields, say

if TYPE_CHECKING:
    from raylm.config import Config, ModelConfig


def check_config(cfg: Config) -> list[str]:
    problems = []
    if cfg.data.source != "squad":
        problems.append(
            f"data.source: model.task 'extractive_qa' reads SQuAD-format files (source "
            f"'squad'), not '{cfg.data.source}'"
        )
    if cfg.data.tokenizer.path is None and cfg.data.tokenizer.kind != "wordpiece":
        problems.append("data.tokenizer.kind: an encoder reads [CLS] q [SEP] c [SEP]: 'wordpiece'")
    room = cfg.data.max_length - cfg.data.qa.max_question_tokens - 3
    if room <= cfg.data.qa.doc_stride:
        problems.append(
            f"data.qa.doc_stride: {cfg.data.qa.doc_stride} must be below the {room} context "
            f"tokens a window of data.max_length {cfg.data.max_length} leaves after "
            f"data.qa.max_question_tokens {cfg.data.qa.max_question_tokens}"
        )
    if cfg.train.best_metric in ("val_accuracy", "val_precision", "val_recall", "val_f1"):
        problems.append(
            f"train.best_metric: {cfg.train.best_metric} is a classification metric "
            "(extractive QA reports val_loss, val_span_accuracy)"
        )
    why = "the SQuAD reader keeps questions as written (it drops exact repeats itself)"
    problems += ignored_fields(
        cfg.data, ("clean", "dedup", "labels", "also", "heldout_of", "mlm"), "data", why
    )
    problems += ignored_fields(cfg.run, ("baseline",), "run", "the QA baseline always runs")
    problems += ignored_fields(cfg.run, ("qa",), "run", "it points at spans, it generates nothing")
    return problems + ignored_fields(cfg.run, ("max_new_tokens",), "run", "it generates nothing")


def _encode(cfg: Config, data_dir: Path, split: str) -> dict[str, Any]:
    from raylm.data.extractive_qa import SpanEncoder
    from raylm.data.lm_pipeline import encode_rows, write_encoded

    qa = cfg.data.qa
    kwargs = {
        "tokenizer_dir": str(data_dir / "tokenizer"),
        "max_length": cfg.data.max_length,
        "stride": qa.doc_stride,
        "max_question_tokens": qa.max_question_tokens,
        # validation keeps every window: its loss is the one a reader meets
        "unanswerable_windows": qa.unanswerable_windows if split == "train" else 1.0,
        "mark": qa.mark_question_words,
    }
    kept, reasons = encode_rows(data_dir, split, SpanEncoder, kwargs)
    counts = write_encoded(kept, data_dir / "encoded" / split)
    with_answer = sum(
        int((b["start_positions"] > 0).sum())
        for b in kept.select_columns(["start_positions"]).iter_batches(batch_format="numpy")
    )
    return {**counts, "windows_with_answer": with_answer, "not_encodable": reasons}


def _add_cloze(cfg: Config, data_dir: Path, rows: list[dict]) -> dict[str, Any]:
    """Cloze questions on the training passages (never another split's), written beside the
    train split's real questions; their counts by question word."""
    from collections import Counter

    from raylm.data.cloze import cloze_rows, question_kind
    from raylm.data.lm_pipeline import add_qa_rows

    passages = [r["context"] for r in rows if r["split"] == "train"]
    extra = cloze_rows(passages, cfg.data.qa.cloze_questions)
    add_qa_rows(extra, data_dir, "train", "cloze")
    kinds = Counter(question_kind(r["question"]) for r in extra)
    out = {
        "passages": len(set(passages)),
        "questions": len(extra),
        "by_question_word": dict(kinds.most_common()),
    }
    print(f"[preprocess] cloze      {out}", flush=True)
    return out


def preprocess(cfg: Config, data_dir: Path) -> dict[str, Any]:
    from raylm.data.lm_pipeline import read_and_split_qa
    from raylm.data.tokenizer import load_tokenizer, train_tokenizer

    t0 = time.perf_counter()
    rows, read = read_and_split_qa(cfg, data_dir)
    cloze = _add_cloze(cfg, data_dir, rows) if cfg.data.qa.cloze_questions else None
    if cfg.data.tokenizer.path:
        load_tokenizer(cfg.data.tokenizer.path).save_pretrained(str(data_dir / "tokenizer"))
    else:
        train = [r for r in rows if r["split"] == "train"]
        contexts = {r["context"] for r in train}
        texts = [*contexts, *(r["question"] for r in train)]
        train_tokenizer(texts, cfg.data.tokenizer, data_dir / "tokenizer", "wordpiece")
    encoded = {s: _encode(cfg, data_dir, s) for s in ("train", "validation")}
    for split, e in encoded.items():
        print(
            f"[preprocess] windows    {split}: {e['examples']} ({e['windows_with_answer']} hold "
            f"the answer), not encodable {e['not_encodable']}",
            flush=True,
        )
    stats = {
        **read,
        "contexts": {
            s: len({r["context"] for r in rows if r["split"] == s})
            for s in ("train", "validation", "test")
        },
        "labels": [],
        "source": cfg.data.source,
        "encoded": encoded,
        **({"cloze": cloze} if cloze else {}),
        "qa": cfg.data.qa.model_dump(),
        "paths": [str(p) for p in cfg.data.paths],
        "elapsed_s": round(time.perf_counter() - t0, 2),
    }
    (data_dir / "stats.json").write_text(
        json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return stats


def datasets(cfg: Config, data_dir: Path) -> dict[str, Any]:
    from raylm.data.lm_pipeline import read_encoded

    return {s: read_encoded(data_dir, s) for s in ("train", "validation")}


def collate(batch: dict[str, Any], spec: RunSpec, seed: int) -> dict[str, Any]:
    from raylm.data.collate import collate_spans

    return collate_spans(batch, spec.pad_id)


def evaluator(spec: RunSpec) -> Any:
    from raylm.eval.evaluators import SpanEvaluator

    return SpanEvaluator()


def build_model(
    model: ModelConfig,
    vocab_size: int,
    num_labels: int = 2,
    pad_id: int = 0,
    eos_id: int | None = None,
    id2label: dict[int, str] | None = None,
) -> Any:
    from raylm.models.build import question_answering

    return question_answering(model, vocab_size, pad_id)


def skeleton(model: ModelConfig, vocab_size: int, num_labels: int = 2, pad_id: int = 0) -> Any:
    from raylm.models.build import question_answering_skeleton

    return question_answering_skeleton(model, vocab_size, pad_id)


def evaluate(cfg: Config, run_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Answer every test question with the exported model; CMRC EM/F1 beside the baseline."""
    from raylm.data.pipeline import read_split
    from raylm.eval.predict import one_actor
    from raylm.eval.qa import qa_scores
    from raylm.eval.qa_baseline import overlap_answer
    from raylm.eval.report import write_evaluation
    from raylm.span_reader import SpanPredictor

    test_rows = read_split(data_dir, "test")
    answered = (
        test_rows.select_columns(["id", "question", "context"])
        .map_batches(
            SpanPredictor,
            fn_constructor_kwargs={"model_dir": str(run_dir / "model")},
            batch_size=64,
            batch_format="numpy",
            compute=one_actor(),  # the model is loaded once
        )
        .to_pandas()
        .set_index("id")
    )
    max_chars = cfg.data.qa.max_answer_chars
    golds, preds, base_preds = {}, {}, {}
    with (run_dir / "test_predictions.jsonl").open("w", encoding="utf-8") as out:
        for row in test_rows.select_columns(["id", "question", "context", "answers"]).iter_rows():
            qid, got = row["id"], answered.loc[row["id"]]
            golds[qid] = [str(a) for a in row["answers"]]
            preds[qid] = str(got["prediction"])
            base_preds[qid] = overlap_answer(row["question"], row["context"], max_chars)[0]
            record = {
                "id": qid, "question": row["question"], "answers": golds[qid],
                "prediction": preds[qid], "pred_start": int(got["pred_start"]),
                "score": float(got["score"]), "baseline": base_preds[qid],
            }  # fmt: skip
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    test = qa_scores(preds, golds)
    test["windows_per_question"] = round(float(answered["windows"].mean()), 3) if golds else 0.0
    base = qa_scores(base_preds, golds)
    metrics = {"test": test, "baseline": {"test": base}}
    write_evaluation(run_dir, metrics)
    say(
        f"test exact match {test['exact_match']:.4f} f1 {test['f1']:.4f} ({test['count']} "
        f"questions) | baseline exact match {base['exact_match']:.4f} f1 {base['f1']:.4f}"
    )
    return metrics


TASK = Task(
    name="extractive_qa",
    description="BERT-style encoder that points at the answer's span in the passage",
    best_metric=("val_loss", "min"),
    check_config=check_config,
    preprocess=preprocess,
    datasets=datasets,
    collate=collate,
    evaluator=evaluator,
    build_model=build_model,
    skeleton=skeleton,
    evaluate=evaluate,
    serve_with="extractor",
    endpoints=frozenset({"qa"}),
    predicts="extract",
)
