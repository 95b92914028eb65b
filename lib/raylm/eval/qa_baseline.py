"""The non-neural QA baseline: a question is read as a pattern with a hole where its question word
is, matched against the context's most similar sentence (reported beside the model as TF-IDF is
for classification).

    overlap_answer("蔡伦改进了什么技术？", "东汉时期，蔡伦改进了造纸术。他被封为龙亭侯。")
    # -> ("造纸术", 9): 蔡伦改进了 [什么] 技术 ~ 蔡伦改进了 [造纸术]

What it does, in order:
1. The context is cut into sentences at 。！？；and line breaks (offsets kept); each scores the
   question's character bigrams it contains (question words removed), then its shared
   characters, and the best one is kept.
2. The question is split at its first question word (什么, 哪, 谁, 多少, 何时...): `left` is
   what comes before it, `right` what comes after.
3. The answer starts after the longest tail of `left` (two characters or more) found in the
   sentence and ends before the longest head of `right` found after that; a missing side is
   replaced by the nearest punctuation (，、：...). Without either, the sentence's longest run of
   characters the question does not use is the answer. At most `max_answer_chars` characters.
It needs no training, so it also shows how much of a dataset lexical overlap alone answers.
"""

from __future__ import annotations

import re

__all__ = ["QUESTION_WORDS", "overlap_answer"]

QUESTION_WORDS = (
    "什么", "哪些", "哪里", "哪个", "哪一", "哪儿", "哪", "谁", "多少", "几", "为什么", "为何",
    "怎样", "怎么", "如何", "何时", "何地", "是否", "吗", "呢", "？", "?",
)  # fmt: skip
_SENTENCE = re.compile(r"[。！？；!?;\n]")
_PUNCT = set("。！？；，、：!?;,:\n「」『』（）()《》“”\"' ")


def _bigrams(text: str) -> set[str]:
    return {text[i : i + 2] for i in range(len(text) - 1)}


def _split_question(question: str) -> tuple[str, str]:
    """The question's text before and after its first question word (("", question) if none)."""
    q = question.strip().rstrip("？?。 ")
    hits = [(q.find(w), w) for w in QUESTION_WORDS if w in q]
    if not hits:
        return q, ""
    pos, word = min(hits, key=lambda h: (h[0], -len(h[1])))
    return q[:pos], q[pos + len(word) :]


def _longest_tail_in(part: str, text: str, after: int = 0) -> tuple[int, int] | None:
    """Where in text[after:] the longest tail of `part` occurs (2+ chars): its (start, end)."""
    for n in range(len(part), 1, -1):
        at = text.find(part[-n:], after)
        if at >= 0:
            return at, at + n
    return None


def _longest_head_in(part: str, text: str, after: int = 0) -> tuple[int, int] | None:
    for n in range(len(part), 1, -1):
        at = text.find(part[:n], after)
        if at >= 0:
            return at, at + n
    return None


def _sentences(context: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for m in _SENTENCE.finditer(context):
        if m.end() > start:
            spans.append((start, m.end()))
        start = m.end()
    if start < len(context):
        spans.append((start, len(context)))
    return spans


def overlap_answer(question: str, context: str, max_answer_chars: int = 40) -> tuple[str, int]:
    """(answer, its start in the context); ("", 0) for an empty context."""
    q = question
    for word in QUESTION_WORDS:
        q = q.replace(word, " ")
    q_bigrams = {b for b in _bigrams(q) if " " not in b}
    q_chars = set(q) - {" "}
    sentences = _sentences(context)
    if not sentences:
        return "", 0

    def score(span: tuple[int, int]) -> tuple[int, int]:
        text = context[span[0] : span[1]]
        return len(q_bigrams & _bigrams(text)), len(q_chars & set(text))

    lo, hi = max(sentences, key=score)
    sentence = context[lo:hi]
    left, right = _split_question(question)
    head = _longest_tail_in(left, sentence) if left else None
    start = head[1] if head else None
    tail = _longest_head_in(right, sentence, start or 0) if right else None
    end = tail[0] if tail else None
    if start is not None or end is not None:
        if start is None:  # back from the right-hand match to the previous punctuation
            start = max((i + 1 for i in range(end) if sentence[i] in _PUNCT), default=0)
        if end is None or end <= start:  # on from the left-hand match to the next punctuation
            end = next((i for i in range(start, len(sentence)) if sentence[i] in _PUNCT), None)
            end = len(sentence) if end is None else end
        while start < end and sentence[start] in _PUNCT:
            start += 1
        if end > start:
            end = min(end, start + max_answer_chars)
            return sentence[start:end], lo + start
    runs, begin = [], None
    for i, ch in enumerate(sentence + "\n"):
        outside = ch not in q_chars and ch not in _PUNCT
        if outside and begin is None:
            begin = i
        elif not outside and begin is not None:
            runs.append((begin, i))
            begin = None
    if not runs:
        return sentence[:max_answer_chars], lo
    s, e = max(runs, key=lambda r: (r[1] - r[0], -r[0]))
    e = min(e, s + max_answer_chars)
    return sentence[s:e], lo + s
