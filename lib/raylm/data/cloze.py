"""Cloze questions made from the training passages themselves (`data.qa.cloze_questions`).

    cloze_questions("1963年被任为主教。…", n=2, seed=0)
    # [("什么时候被任为主教？", "1963年", 0), ...]   (question, answer, answer_start)

A few thousand labelled questions are too few for a small reader trained from nothing to learn
to line a question up with the passage; every passage, though, can ask about itself. Take a
sentence of a training passage, pick a noun, name, place, time or number in it (jieba's
part-of-speech tags), replace it with the question word its kind asks for (谁 for a person,
哪里 for a place, 什么时候 for a time, 多少 for a number, 什么 otherwise), and keep the clause
around it: the question's answer is the word, at its place in the passage. This is cloze
translation in its simplest form (Lewis et al., 2019, "Unsupervised Question Answering by Cloze
Translation"). Only training passages get cloze questions (the task's preprocessing makes them
after the split, from the train split's passages), so nothing of a validation or test passage
is trained on; stats.json counts them by question word.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator

SENTENCE = re.compile(r"[^。！？；!?;\n]+")
CLAUSE_BREAKS = "，,"
# jieba.posseg flags of the words a question may ask for
ASKABLE = {"nr", "nrt", "ns", "nt", "nz", "n", "vn", "eng", "m", "t"}
MIN_SENTENCE_CHARS = 8
MIN_QUESTION_CHARS = 6


def question_word(flag: str, word: str) -> str:
    """The question word a word of this part of speech answers."""
    if flag in ("nr", "nrt"):
        return "谁"
    if flag == "ns":
        return "哪里"
    if flag == "t" or (flag == "m" and word[-1] in "年月日"):
        return "什么时候"
    if flag == "m":
        return "多少"
    return "什么"


QUESTION_WORDS = ("什么时候", "哪里", "多少", "谁", "什么")


def question_kind(question: str) -> str:
    """Which question word a cloze question asks with."""
    return next((w for w in QUESTION_WORDS if w in question), "")


def _words(sentence: str, offset: int) -> Iterator[tuple[str, str, int]]:
    """(word, flag, start in the passage), a number joined to its following measure word."""
    import jieba.posseg

    merged: list[list] = []
    at = offset
    for token in jieba.posseg.cut(sentence):
        word, flag = token.word, token.flag
        if merged and merged[-1][1] == "m" and flag in ("m", "q"):
            merged[-1][0] += word
        else:
            merged.append([word, flag, at])
        at += len(word)
    for word, flag, start in merged:
        yield word, flag, start


def cloze_questions(
    context: str, n: int, seed: int = 0, max_answer_chars: int = 12
) -> list[tuple[str, str, int]]:
    """Up to `n` cloze questions on `context`, at most one per sentence: (question, answer,
    answer's start in `context`). The same passage and seed give the same questions."""
    digest = hashlib.blake2b(f"{seed}\x00{context}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    sentences = [(m.start(), m.end()) for m in SENTENCE.finditer(context)]
    rng.shuffle(sentences)
    out: list[tuple[str, str, int]] = []
    for s0, s1 in sentences:
        if len(out) >= n:
            break
        if s1 - s0 < MIN_SENTENCE_CHARS:
            continue
        askable = [
            (w, f, a)
            for w, f, a in _words(context[s0:s1], s0)
            if f in ASKABLE and 2 <= len(w) <= max_answer_chars
        ]
        if not askable:
            continue
        word, flag, start = rng.choice(askable)
        end = start + len(word)
        # the clause around the word (a whole sentence when the clause is short)
        left = max(context.rfind(c, s0, start) for c in CLAUSE_BREAKS)
        left = s0 if left < 0 else left + 1
        rights = [i for i in (context.find(c, end, s1) for c in CLAUSE_BREAKS) if i >= 0]
        right = min(rights, default=s1)
        if right - left < 10:
            left, right = s0, s1
        question = context[left:start] + question_word(flag, word) + context[end:right]
        question = question.strip("，、：:「」『』\"' ") + "？"
        if len(question) >= MIN_QUESTION_CHARS:
            out.append((question, word, start))
    return out


def cloze_rows(contexts: list[str], n: int, seed: int = 0) -> list[dict]:
    """SQuAD-like training rows (the QA schema's fields) of every context's cloze questions;
    ids `cloze-<passage>-<k>`, passages numbered in sorted order."""
    rows = []
    for p, context in enumerate(sorted(set(contexts))):
        for k, (question, answer, start) in enumerate(cloze_questions(context, n, seed)):
            rows.append(
                {
                    "id": f"cloze-{p}-{k}",
                    "context": context,
                    "question": question,
                    "answers": [answer],
                    "answer_starts": [start],
                    "split": "train",
                }
            )
    return rows
