"""Answers from an extractive-QA model: windows over the context, n-best decoding, the best span.

    reader = SpanReader("outputs/qa_extractive_zh/model")
    [a] = reader.answer(["谁发明了造纸术？"], ["东汉的蔡伦改进了造纸术。……"])
    a.text, a.start, a.end, a.score        # "蔡伦", 3, 5, 7.9: context[a.start:a.end] == a.text

Each window scores every context token as the answer's start and as its end; decoding takes the
`n_best` highest starts and ends of each window, pairs them (end not before start, at most
`max_answer_chars` characters), and keeps the pair that beats its window's [CLS] score ("not in
this window", start + end logit at position 0) by the most, over all of the question's windows.
The span is cut from the original context by character offsets, so the answer is always a
substring of the context. The window settings default to the ones the model was trained with
(raylm.json `qa`). Used by evaluation (Ray Data actors) and Serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Answer", "SpanReader", "best_span"]


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offsets in the context: context[start:end] == text
    end: int
    score: float  # start + end logit of the chosen tokens, less the window's [CLS] ones
    windows: int  # windows the context was cut into


def best_span(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: list[tuple[int, int]],
    context: tuple[int, int],
    n_best: int,
    max_answer_chars: int,
) -> tuple[float, int, int] | None:
    """(score, first char, end char) of one window's best span, or None when no pair of its
    candidates is a valid span. `context` = the window's first and last context token; the
    score is the span's start + end logit less the [CLS] (position 0) ones."""
    first, last = context
    null = float(start_logits[0] + end_logits[0])
    starts = first + np.argsort(start_logits[first : last + 1])[::-1][:n_best]
    ends = first + np.argsort(end_logits[first : last + 1])[::-1][:n_best]
    best = None
    for s in starts:
        for e in ends:
            if e < s or offsets[e][1] - offsets[s][0] > max_answer_chars:
                continue
            score = float(start_logits[s] + end_logits[e]) - null
            if best is None or score > best[0]:
                best = (score, int(offsets[s][0]), int(offsets[e][1]))
    return best


class SpanReader:
    """An exported extractive-QA model (or any local `...ForQuestionAnswering` folder) with its
    tokenizer, answering batches of (question, context) pairs on CPU or the given device."""

    def __init__(self, model_dir: str, device: str | None = None, **qa: Any):
        import torch
        from transformers import AutoTokenizer

        from raylm.config import QAConfig
        from raylm.data.extractive_qa import QUESTION_WORD_TYPE
        from raylm.models.export import load_model, read_model_meta

        meta = read_model_meta(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if not self.tokenizer.is_fast:
            raise ValueError(f"{model_dir}: extractive QA needs a fast tokenizer (offsets)")
        self.model = load_model(model_dir, "AutoModelForQuestionAnswering").eval()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.max_length = int(qa.pop("max_length", None) or meta.get("max_length") or 384)
        self.qa = QAConfig(**{**(meta.get("qa") or {}), **qa})
        # Marks need the third token type; a folder trained without it has two (any plain
        # ...ForQuestionAnswering folder, or an export from before marks existed).
        token_types = getattr(self.model.config, "type_vocab_size", 2)
        self.mark = self.qa.mark_question_words and token_types > QUESTION_WORD_TYPE

    def answer(
        self, questions: list[str], contexts: list[str], batch_size: int = 32
    ) -> list[Answer]:
        import torch

        from raylm.data.collate import pad_rows, padded_ids
        from raylm.data.extractive_qa import context_range, windows

        for name, texts in (("question", questions), ("context", contexts)):
            if not all(str(t).strip() for t in texts):
                raise ValueError(f"{name}: empty (extractive QA needs a question and a context)")
        qa = self.qa
        enc = windows(
            self.tokenizer, questions, contexts, self.max_length, qa.doc_stride,
            qa.max_question_tokens, self.mark,
        )  # fmt: skip
        owner = enc["overflow_to_sample_mapping"]
        best: list[tuple[float, int, int] | None] = [None] * len(questions)
        for lo in range(0, len(owner), batch_size):
            rows = range(lo, min(lo + batch_size, len(owner)))
            pad = self.tokenizer.pad_token_id or 0
            ids, mask = padded_ids([enc["input_ids"][w] for w in rows], pad)
            types = pad_rows([enc["token_type_ids"][w] for w in rows], 0)
            inputs = {
                "input_ids": torch.from_numpy(ids).to(self.device),
                "token_type_ids": torch.from_numpy(types).to(self.device),
                "attention_mask": torch.from_numpy(mask).to(self.device),
            }
            with torch.inference_mode():
                out = self.model(**inputs)
            starts = out.start_logits.float().cpu().numpy()
            ends = out.end_logits.float().cpu().numpy()
            for j, w in enumerate(rows):
                found = best_span(
                    starts[j], ends[j], enc["offset_mapping"][w],
                    context_range(enc.sequence_ids(w)), qa.n_best, qa.max_answer_chars,
                )  # fmt: skip
                q = owner[w]
                if found and (best[q] is None or found[0] > best[q][0]):
                    best[q] = found
        counts = np.bincount(owner, minlength=len(questions))
        return [
            Answer(c[b[1] : b[2]], b[1], b[2], b[0], int(n)) if b else Answer("", 0, 0, 0.0, int(n))
            for c, b, n in zip(contexts, best, counts, strict=True)
        ]


class SpanPredictor:
    """Ray Data `map_batches` callable: batches of SQuAD rows (id, question, context) -> id,
    `prediction`, `pred_start`, `score`, `windows` (loads the model once per actor)."""

    def __init__(self, model_dir: str, **qa: Any):
        self.reader = SpanReader(model_dir, **qa)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        answers = self.reader.answer(
            [str(q) for q in batch["question"]], [str(c) for c in batch["context"]]
        )
        return {
            "id": batch["id"],
            "prediction": np.array([a.text for a in answers], dtype=object),
            "pred_start": np.array([a.start for a in answers], dtype=np.int64),
            "score": np.array([a.score for a in answers], dtype=np.float64),
            "windows": np.array([a.windows for a in answers], dtype=np.int64),
        }
