"""Extractive-QA scores: CMRC 2018 (Chinese) and SQuAD v1.1 (English) exact match and F1.

Pure Python. Score a whole set (each question against its best-matching gold answer, averaged)::

    from raylm.eval.qa import qa_scores
    qa_scores({"q1": "北京"}, {"q1": ["北京市", "北京"]})  # {"exact_match": 1.0, "f1": 1.0, ...}

Scores are fractions in 0..1 (what metrics.json stores); the official scripts print percent, so
multiply by 100 to compare with published numbers. A gold question with no prediction scores 0
and stays in the average (as the official CMRC script counts it), and a prediction that is empty
after normalisation scores 0 on both metrics.

Chinese follows the official CMRC 2018 script (ymcui/cmrc2018, ``cmrc2018_evaluate.py``):

- EM: lower-case, strip the ends, delete the script's punctuation list, then compare strings.
- F1: segment (each character in U+4E00..U+9FA5 alone, the text between them word-tokenised),
  dropping the same punctuation; overlap = the longest common *contiguous* run of segments;
  precision = overlap / prediction segments, recall = overlap / answer segments.

The script's punctuation list is narrow, and kept as is so numbers stay comparable: ASCII
``- : _ * ^ / \\ ~ ` + =`` and ``，。：？！“”；’《》·、「」（）－～『』``. Other ASCII punctuation
(``. , ! ? % ( )``...) is *not* removed: in F1 the word tokeniser splits it into its own
segments. The script lists ``……`` but tests one character at a time, so ``…`` is never removed.
The script word-tokenises with ``nltk.word_tokenize``; ``_word_tokenize`` below reimplements the
rules that matter for lower-cased answer text (numbers such as ``2,400`` and ``0.304`` stay one
token; ``%``, brackets and a final period split off) without the nltk dependency.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping

__all__ = [
    "CMRC_PUNCTUATION",
    "cmrc_exact_match",
    "cmrc_f1",
    "cmrc_normalize",
    "cmrc_segments",
    "has_cjk",
    "qa_scores",
    "squad_exact_match",
    "squad_f1",
    "squad_normalize",
]

# Exactly the official script's sp_char list, one character each ("……" never matched there).
CMRC_PUNCTUATION = frozenset("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")
_CMRC_CJK = re.compile(r"[\u4e00-\u9fa5]")  # the official script's range, used for segmenting
_ANY_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # wider: only picks a language

# nltk.word_tokenize-like padding, applied in order, then split on whitespace.
_WORD_PADS = (
    (re.compile(r'(^|[\s(\[{<])"'), r"\1 `` "),  # an opening double quote becomes ``
    (re.compile(r"([^.])\.([\])}>\"']*)\s*$"), r"\1 . \2 "),  # the text's final period
    (re.compile(r",(?!\d)"), " , "),  # a comma not inside a number
    (re.compile(r"\.{2,}|--|[?!;@#$%&()\[\]{}<>«»„‘\u2012-\u2015]"), r" \g<0> "),  # + dashes
    (re.compile(r'"'), " '' "),  # any other double quote closes
    (re.compile(r"(?<=[^'\s])('s|'m|'d|'ll|'re|'ve|n't|')(?=\s|$)"), r" \1"),  # clitics
)

_SQUAD_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _word_tokenize(text: str) -> list[str]:
    for pattern, repl in _WORD_PADS:
        text = pattern.sub(repl, text)
    return text.split()


def has_cjk(text: str) -> bool:
    """True when ``text`` holds a CJK ideograph (what ``lang="auto"`` looks for)."""
    return bool(_ANY_CJK.search(text))


def cmrc_normalize(text: str) -> str:
    """Official EM form: lower-cased, ends stripped, then punctuation deleted (in that order)."""
    return "".join(ch for ch in text.lower().strip() if ch not in CMRC_PUNCTUATION)


def cmrc_segments(text: str) -> list[str]:
    """Official F1 segments: ``"2018年FIFA世界杯"`` -> ``2018 年 fifa 世 界 杯``."""
    segments: list[str] = []
    pending = ""  # non-CJK text waiting to be word-tokenised
    for ch in text.lower().strip():
        # Punctuation is skipped *without* ending the pending run, as in the official script,
        # so "dc-9" is the single segment "dc9".
        if ch in CMRC_PUNCTUATION:
            continue
        if _CMRC_CJK.match(ch):
            segments.extend(_word_tokenize(pending))
            pending = ""
            segments.append(ch)
        else:
            pending += ch
    segments.extend(_word_tokenize(pending))
    return segments


def _longest_common_run(a: list[str], b: list[str]) -> int:
    """Length of the longest contiguous run shared by ``a`` and ``b`` (O(len a * len b))."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def _as_answers(answers: str | Iterable[str]) -> list[str]:
    return [answers] if isinstance(answers, str) else [a for a in answers if a is not None]


def cmrc_exact_match(prediction: str, answers: str | Iterable[str]) -> float:
    """1.0 when the prediction equals any answer after :func:`cmrc_normalize`, else 0.0."""
    if not cmrc_segments(prediction):
        return 0.0
    pred = cmrc_normalize(prediction)
    return float(any(pred == cmrc_normalize(a) for a in _as_answers(answers)))


def cmrc_f1(prediction: str, answers: str | Iterable[str]) -> float:
    """Best F1 over answers, overlap = longest common contiguous run of segments."""
    pred = cmrc_segments(prediction)
    best = 0.0
    for answer in _as_answers(answers):
        gold = cmrc_segments(answer)
        overlap = _longest_common_run(gold, pred)
        if overlap:
            precision, recall = overlap / len(pred), overlap / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def squad_normalize(text: str) -> str:
    """SQuAD v1.1: lower-case, drop ASCII punctuation, drop a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, answers: str | Iterable[str]) -> float:
    """1.0 when the normalised prediction equals any normalised answer, else 0.0."""
    pred = squad_normalize(prediction)
    return float(bool(pred) and any(pred == squad_normalize(a) for a in _as_answers(answers)))


def squad_f1(prediction: str, answers: str | Iterable[str]) -> float:
    """Best bag-of-tokens F1 over answers (token order ignored, unlike CMRC)."""
    pred = squad_normalize(prediction).split()
    best = 0.0
    for answer in _as_answers(answers):
        gold = squad_normalize(answer).split()
        overlap = sum((Counter(pred) & Counter(gold)).values())
        if overlap:
            precision, recall = overlap / len(pred), overlap / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def qa_scores(
    predictions: Mapping[str, str],
    golds: Mapping[str, str | Iterable[str]],
    lang: str = "auto",
) -> dict:
    """Mean EM and F1 (fractions 0..1) over the questions in ``golds``.

    ``lang``: ``"zh"`` (CMRC 2018 rules), ``"en"`` (SQuAD v1.1 rules) or ``"auto"``, which picks
    CMRC for a question whose gold answers hold CJK characters and SQuAD otherwise. Returns
    ``{"exact_match", "f1", "count", "missing"}``: count = questions scored, missing = those with
    no prediction (scored 0). Predictions for ids not in ``golds`` are ignored.
    """
    if lang not in ("zh", "en", "auto"):
        raise ValueError(f'lang must be "zh", "en" or "auto", got {lang!r}')
    em_total = f1_total = 0.0
    missing = 0
    for qid, raw_answers in golds.items():
        answers = _as_answers(raw_answers)
        prediction = predictions.get(qid)
        if prediction is None:
            missing += 1
            continue
        prediction = str(prediction)
        zh = lang == "zh" or (lang == "auto" and any(has_cjk(a) for a in answers))
        em_fn, f1_fn = (cmrc_exact_match, cmrc_f1) if zh else (squad_exact_match, squad_f1)
        em_total += em_fn(prediction, answers)
        f1_total += f1_fn(prediction, answers)
    count = len(golds)
    return {
        "exact_match": em_total / count if count else 0.0,
        "f1": f1_total / count if count else 0.0,
        "count": count,
        "missing": missing,
    }
