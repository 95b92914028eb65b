"""Extractive-QA features: (question, context) -> windows of `max_length` tokens with the answer's
start and end token as targets (`model.task: extractive_qa`).

    enc = windows(tok, ["谁发明了纸？"], [context], 256, stride=64, max_question_tokens=48)
    # one window per stretch of the context: [CLS] question [SEP] context piece [SEP]
    s, e = span_targets(enc["offset_mapping"][0], enc.sequence_ids(0), 12, 15)

A context longer than the window is cut into overlapping windows (`data.qa.doc_stride` tokens
shared by neighbours), so no part of it is dropped; each window remembers the example it came from
and the character offsets of its context tokens, which is how a predicted token span becomes a
span of the original context (raylm.span_reader). A window that holds the whole answer is trained
to point at it; one that does not points at [CLS] (position 0), which teaches the model that the
answer is elsewhere, and decoding compares windows by how far their best span beats that [CLS]
score. Long passages give two or three answerless windows per question, and a small model fed
all of them learns to always say [CLS]: only `data.qa.unanswerable_windows` of them (a share
drawn by a hash of the window, so the same ones every run) are kept. Questions longer than
`max_question_tokens` are cut.

Context tokens the question also has get token type 2 (`data.qa.mark_question_words`): a token
that, with its neighbour, repeats two consecutive tokens of the question (pairs, not single
characters, so 的 and 是 mark nothing). This is the exact-match feature of DrQA (Chen et al.,
2017, "Reading Wikipedia to Answer Open-Domain Questions"); a small reader trained from
nothing cannot learn to line a question up with the passage from a few thousand questions, and
with it the answer is the stretch next to the marked words. The model's token-type table gets
the third row (`raylm.models.build.question_answering`).

`encode_span_batch` does this over a Ray Data batch of SQuAD rows (first answer trains); rows
whose answer is nowhere in their context are rejected (`answer_not_in_context`), counted like
every other reject.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

from raylm.data.convert import nearest_span

SPAN_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("token_type_ids", pa.list_(pa.int8())),
        ("start_positions", pa.int32()),
        ("end_positions", pa.int32()),
    ]
)

QUESTION_WORD_TYPE = 2  # token type of a context token the question also has
TOKEN_TYPES = 3  # question, context, context the question also has

__all__ = [
    "QUESTION_WORD_TYPE",
    "SPAN_SCHEMA",
    "TOKEN_TYPES",
    "SpanEncoder",
    "context_range",
    "cut_question",
    "encode_span_batch",
    "span_targets",
    "windows",
]


def cut_question(tokenizer: Any, question: str, max_tokens: int) -> str:
    """The question, cut after its first `max_tokens` tokens (whole characters kept)."""
    enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    return question if len(offsets) <= max_tokens else question[: offsets[max_tokens - 1][1]]


def windows(
    tokenizer: Any,
    questions: list[str],
    contexts: list[str],
    max_length: int,
    stride: int,
    max_question_tokens: int,
    mark: bool = True,
) -> Any:
    """Tokenized windows of every (question, context) pair; `overflow_to_sample_mapping` names
    each window's pair, `offset_mapping` its tokens' character spans, `sequence_ids(i)` which
    tokens are context (1); with `mark`, context tokens the question also has are type 2."""
    cut = [cut_question(tokenizer, q, max_question_tokens) for q in questions]
    room = max_length - max_question_tokens - 3  # [CLS] q [SEP] c [SEP]
    if room <= stride:
        raise ValueError(
            f"data.max_length {max_length} leaves {room} context tokens per window after "
            f"data.qa.max_question_tokens {max_question_tokens}: need more than "
            f"data.qa.doc_stride {stride}"
        )
    enc = tokenizer(
        cut,
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        padding=False,
    )
    if mark:
        for w, ids in enumerate(enc["input_ids"]):
            mark_question_words(ids, enc.sequence_ids(w), enc["token_type_ids"][w])
    return enc


def mark_question_words(
    ids: list[int], sequence_ids: list[int | None], types: list[int]
) -> list[int]:
    """Set `types` (in place) to QUESTION_WORD_TYPE at every context token that, with the
    context token before or after it, repeats two consecutive tokens of the question."""
    question = [t for t, s in zip(ids, sequence_ids, strict=True) if s == 0]
    pairs = set(zip(question[:-1], question[1:], strict=True))
    n = len(ids)
    for j in range(n):
        if sequence_ids[j] != 1:
            continue
        after = j + 1 < n and sequence_ids[j + 1] == 1 and (ids[j], ids[j + 1]) in pairs
        before = j > 0 and sequence_ids[j - 1] == 1 and (ids[j - 1], ids[j]) in pairs
        if after or before:
            types[j] = QUESTION_WORD_TYPE
    return types


def context_range(sequence_ids: list[int | None]) -> tuple[int, int]:
    """First and last token index of the context in a window."""
    first = sequence_ids.index(1)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    return first, last


def span_targets(
    offsets: list[tuple[int, int]], sequence_ids: list[int | None], start: int, end: int
) -> tuple[int, int]:
    """Token indices (start, end), inclusive, of the characters [start, end) in this window;
    (0, 0), the [CLS] position, when the window does not hold all of them."""
    first, last = context_range(sequence_ids)
    if offsets[first][0] > start or offsets[last][1] < end:
        return 0, 0
    s = first
    while s <= last and offsets[s][1] <= start:
        s += 1
    e = last
    while e >= first and offsets[e][0] >= end:
        e -= 1
    return (s, e) if s <= e else (0, 0)


def keeps_window(question: str, context: str, window: int, share: float) -> bool:
    """Whether an answerless training window is kept: a stable draw of `share` of them."""
    if share >= 1:
        return True
    digest = hashlib.blake2b(f"{window}\x00{question}\x00{context}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64 < share


def encode_span_batch(
    batch: dict[str, Any],
    tokenizer: Any,
    max_length: int,
    stride: int,
    max_question_tokens: int,
    unanswerable_windows: float = 1.0,
    mark: bool = True,
) -> pa.Table:
    """A SQuAD batch -> feature windows (SPAN_SCHEMA + `reject_reason` ""), then one row per
    rejected question (its reason, no ids), so one pass yields both. Of the windows without the
    answer, a stable `unanswerable_windows` share is kept."""
    questions = [str(q) for q in batch["question"]]
    contexts = [str(c) for c in batch["context"]]
    out: dict[str, list] = {name: [] for name in (*SPAN_SCHEMA.names, "reject_reason")}
    keep, spans, rejects = [], [], []
    for i, context in enumerate(contexts):
        answers = list(batch["answers"][i])
        answer = str(answers[0]) if answers else ""
        starts = list(batch["answer_starts"][i]) if "answer_starts" in batch else []
        found = nearest_span(context, answer, int(starts[0]) if starts else None)
        if found is None:
            rejects.append("answer_not_in_context")
            continue
        keep.append(i)
        spans.append((found, found + len(answer)))
    if keep:
        enc = windows(
            tokenizer,
            [questions[i] for i in keep],
            [contexts[i] for i in keep],
            max_length,
            stride,
            max_question_tokens,
            mark,
        )
        first: dict[int, int] = {}  # each question's first window
        for w, row in enumerate(enc["overflow_to_sample_mapping"]):
            s, e = span_targets(enc["offset_mapping"][w], enc.sequence_ids(w), *spans[row])
            nth = w - first.setdefault(row, w)  # the window's number within its question
            i = keep[row]
            if (s, e) == (0, 0) and not keeps_window(
                questions[i], contexts[i], nth, unanswerable_windows
            ):
                continue
            out["input_ids"].append(enc["input_ids"][w])
            out["token_type_ids"].append(enc["token_type_ids"][w])
            out["start_positions"].append(s)
            out["end_positions"].append(e)
            out["reject_reason"].append("")
    for reason in rejects:
        for name, empty in (("input_ids", []), ("token_type_ids", []), ("start_positions", 0)):
            out[name].append(empty)
        out["end_positions"].append(0)
        out["reject_reason"].append(reason)
    schema = SPAN_SCHEMA.append(pa.field("reject_reason", pa.string()))
    return pa.table({f.name: pa.array(out[f.name], f.type) for f in schema}, schema)


class SpanEncoder:
    """`map_batches` callable: loads the tokenizer once per process, then `encode_span_batch`."""

    def __init__(
        self,
        tokenizer_dir: str,
        max_length: int,
        stride: int,
        max_question_tokens: int,
        unanswerable_windows: float = 1.0,
        mark: bool = True,
    ):
        from raylm.data.tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_dir)
        if not self.tokenizer.is_fast:
            raise ValueError(f"{tokenizer_dir}: extractive QA needs a fast tokenizer (offsets)")
        self.args = (max_length, stride, max_question_tokens, unanswerable_windows, mark)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        return encode_span_batch(batch, self.tokenizer, *self.args)
