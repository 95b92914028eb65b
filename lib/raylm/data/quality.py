"""Quality filters and PII scrubbing: pure batch -> batch steps beside steps.py (no Ray import).

Each filter rejects kept rows with its own reason; the measure it thresholds is a plain function
of one text, so it can be tested and tuned alone. `steps.clean_batch` runs what a QualityConfig
(`data.clean.quality`) switches on: `scrub_pii` after the text steps, `quality_filters` after
the length and noise checks.

    quality.repeated_line_ratio("好评！好评！好评！")  # 0.67: two of three sentences repeat
    quality.scrub_pii_text("电话 13800138000", ("phone",))  # ("电话 <PHONE>", {"phone": 1})

The n-gram and script measures count units: one CJK character, or one run of other letters
or digits (a word), so Chinese and English texts of the same content measure alike.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from raylm.data.batch import Batch, copy_batch, reject_if

if TYPE_CHECKING:
    from raylm.quality_settings import QualityConfig

# Han (with extensions and compatibility forms), kana, Bopomofo, Hangul, 々 and 〇; not CJK
# punctuation (U+3000-303F), which is punctuation.
_CJK = (
    "\u1100-\u11ff\u3005\u3007\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31a0-\u31bf\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
_UNIT = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")
_WORD = re.compile(rf"[^\W\d_{_CJK}]+")  # a run of letters, not CJK
_CJK_CHAR = re.compile(rf"[{_CJK}]")
# Line ends, and sentence ends (a folded text is one line): 。！？!? or a period before a space.
_SEGMENT_END = re.compile(r"[\n\r。！？!?]+|\.(?=\s|$)")
_NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]")
_DIGIT = re.compile(r"\d")
_SPACES = re.compile(r"\s+")
# Symbols (Unicode S*) that reviews use as punctuation: "好~~", "5+", "¥30", "25°".
COMMON_SYMBOLS = frozenset("~+=$¥€£°")

PII_KINDS = ("email", "phone", "id_card")
PLACEHOLDERS = {kind: f"<{kind.upper()}>" for kind in PII_KINDS}
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))


def pii_column(kind: str) -> str:
    """The batch column counting a row's replaced `kind`s, e.g. `pii_email`."""
    return f"pii_{kind}"


# ----------------------------------------------------------------------------------- measures
def is_symbol(ch: str) -> bool:
    """Neither letter, mark, number, punctuation nor space (or U+FFFD); the symbols reviews use
    as punctuation (COMMON_SYMBOLS) are not. `steps.noise_ratio` counts the same chars."""
    if ch == "\ufffd":
        return True
    return ch not in COMMON_SYMBOLS and unicodedata.category(ch)[0] not in "LMNPZ"


def units(text: str) -> list[str]:
    """CJK characters one by one, other letters and digits by run: `用Python 3` -> 用 Python 3."""
    return _UNIT.findall(text)


def repeated_line_ratio(text: str) -> float:
    """Share of the text's lines that repeat an earlier line (Gopher's dup_line_frac). Lines are
    also cut at sentence ends, because whitespace folding joins a text's lines into one."""
    segments = [s for s in (seg.strip() for seg in _SEGMENT_END.split(text)) if s]
    if len(segments) < 2:
        return 0.0
    return (len(segments) - len(set(segments))) / len(segments)


def repeated_ngram_ratio(text: str, n: int) -> float:
    """Share of the characters of the text's units inside an n-gram of units seen earlier in the
    text (Gopher's duplicate n-gram character fraction; n units: n CJK chars or n words)."""
    us = units(text)
    if len(us) <= n:
        return 0.0
    ids: dict[str, str] = {}  # one char per distinct unit: n-grams become cheap substrings
    coded = "".join([ids.setdefault(u, chr(len(ids))) for u in us])
    covered = bytearray(len(us))
    seen: set[str] = set()
    for i in range(len(us) - n + 1):
        gram = coded[i : i + n]
        if gram in seen:
            covered[i : i + n] = b"\x01" * n
        else:
            seen.add(gram)
    lengths = [len(u) for u in us]
    return sum(itertools.compress(lengths, covered)) / sum(lengths)


def symbol_digit_ratio(text: str) -> float:
    """Share of non-space chars that are digits or symbols (`is_symbol`: punctuation is not)."""
    text = _without_placeholders(text)
    chars = len(text) - sum(map(len, _SPACES.findall(text)))
    if not chars:
        return 0.0
    symbols = sum(1 for ch in _NOT_WORD_OR_SPACE.findall(text) if is_symbol(ch))
    return (symbols + len(_DIGIT.findall(text))) / chars


def script_ratio(text: str, script: str) -> float:
    """Share of the text's letter units in `script` (`cjk` or `latin`): a CJK char counts one,
    a run of other letters one (`使用Python训练` is 4 CJK of 5). Digits, spaces, punctuation do
    not count; a text without letters has none of any script (0.0)."""
    text = _without_placeholders(text)
    cjk = len(_CJK_CHAR.findall(text))
    words = _WORD.findall(text)
    latin = sum(1 for w in words if _LATIN_LETTER.match(w))
    total = cjk + len(words)
    return {"cjk": cjk, "latin": latin}[script] / total if total else 0.0


def distinct_chars(text: str) -> int:
    """How many different non-space characters the text has."""
    return len(set(_SPACES.sub("", _without_placeholders(text))))


def _without_placeholders(text: str) -> str:
    """Placeholders are not the writer's: they must not pass a text as Latin or as varied."""
    return _PLACEHOLDER.sub(" ", text) if "<" in text else text


# ------------------------------------------------------------------------------------ filters
def check_repeated_lines(batch: Batch, max_ratio: float) -> Batch:
    return reject_if(batch, lambda t: repeated_line_ratio(t) > max_ratio, "repeated_lines")


def check_repeated_ngrams(batch: Batch, max_ratio: float, n: int) -> Batch:
    return reject_if(batch, lambda t: repeated_ngram_ratio(t, n) > max_ratio, "repeated_ngrams")


def check_symbols_digits(batch: Batch, max_ratio: float) -> Batch:
    pred = lambda t: symbol_digit_ratio(t) > max_ratio  # noqa: E731
    return reject_if(batch, pred, "too_many_symbols_digits")


def check_script(batch: Batch, script: str, min_ratio: float) -> Batch:
    return reject_if(batch, lambda t: script_ratio(t, script) < min_ratio, "wrong_script")


def check_distinct_chars(batch: Batch, min_chars: int) -> Batch:
    return reject_if(batch, lambda t: distinct_chars(t) < min_chars, "too_few_distinct_chars")


# -------------------------------------------------------------------------------- PII scrubbing
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
    r"\.[A-Za-z]{2,}"
)
# Resident ID: region (6), birth date 18xx-20xx (8), sequence (3), check digit (or X). The
# 15-digit form of before 1999 is left alone: no check digit tells it from other numbers.
_ID_CARD = re.compile(
    r"(?<![A-Za-z0-9])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    r"\d{3}[\dXx](?![A-Za-z0-9])"
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
# A number starts and ends outside a run of letters, digits or a decimal ("v1.13800138000",
# "SN13800138000"), and a Chinese one not after "+" (+1 415...: international) unless it is
# +86 / 0086 (optionally in parentheses).
_START = r"(?<![A-Za-z0-9.+])"
_END = r"(?![A-Za-z0-9]|\.\d)"
_CN = rf"(?:\(?(?:\+|(?<![A-Za-z0-9])00)86\)?[ \-]?|{_START})"
_AREA = r"(?:10|2\d|[3-9]\d\d)"  # 010 Beijing, 02x, then four-digit codes 0xxx
_MOBILE = re.compile(rf"{_CN}1[3-9]\d[ \-]?\d{{4}}[ \-]?\d{{4}}{_END}")
# Landline: 010-12345678, (0755)1234567; unseparated only when the local number starts 2-9.
_LANDLINE = re.compile(
    rf"{_CN}(?:(?:\(0?{_AREA}\)[ \-]?|0{_AREA}[ \-])[1-9]\d{{6,7}}|0{_AREA}[2-9]\d{{6,7}})"
    rf"(?:-\d{{1,4}})?{_END}"
)
# +country code and groups: +1 (415) 555-2671, +44 20 7946 0958; counts checked in
# _international_phone.
_INTERNATIONAL = re.compile(rf"(?<![A-Za-z0-9+])\+[1-9](?:[ \-]?\(?\d{{1,5}}\)?){{1,6}}{_END}")
_DATE = re.compile(r"(?:19|20)\d\d[ \-]?(?:0?[1-9]|1[0-2])[ \-]?(?:0?[1-9]|[12]\d|3[01])")


def id_card_valid(number: str) -> bool:
    """The ISO 7064 MOD 11-2 check digit of an 18-character resident ID number."""
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=False))
    return len(number) == 18 and "10X98765432"[total % 11] == number[17].upper()


def _international_phone(number: str) -> bool:
    """8-15 digits (E.164). Written in one run, at least 10; else at least 7 after the country
    code (8 in one group), and no date there (`+1 2024-01-15`, `+1 20240115`)."""
    groups = list(re.finditer(r"\d+", number))
    digits = sum(len(g.group()) for g in groups)
    if not 8 <= digits <= 15:
        return False
    if len(groups) == 1:
        return digits >= 10
    national = digits - len(groups[0].group())
    least = 8 if len(groups) == 2 else 7
    return national >= least and not _DATE.fullmatch(number[groups[1].start() :])


# (kind, pattern, check of a match); e-mails first (their digits are no phone), IDs before phones.
_PII: tuple[tuple[str, re.Pattern[str], Callable[[str], bool] | None], ...] = (
    ("email", _EMAIL, None),
    ("id_card", _ID_CARD, id_card_valid),
    ("phone", _MOBILE, None),
    ("phone", _LANDLINE, None),
    ("phone", _INTERNATIONAL, _international_phone),
)


def scrub_pii_text(text: str, kinds: Iterable[str] = PII_KINDS) -> tuple[str, dict[str, int]]:
    """Replace the `kinds` of PII (e-mail addresses, resident ID numbers whose check digit holds,
    phone numbers) with PLACEHOLDERS; return the text and how many of each were replaced."""
    counts = dict.fromkeys(kinds, 0)
    if not _DIGIT.search(text) and "@" not in text:
        return text, counts
    for kind, pattern, valid in _PII:
        if kind in counts:
            text, n = _replace(pattern, text, PLACEHOLDERS[kind], valid)
            counts[kind] += n
    return text, counts


def _replace(
    pattern: re.Pattern[str], text: str, placeholder: str, valid: Callable[[str], bool] | None
) -> tuple[str, int]:
    if valid is None:
        return pattern.subn(placeholder, text)
    n = 0

    def one(m: re.Match[str]) -> str:
        nonlocal n
        if not valid(m.group()):
            return m.group()
        n += 1
        return placeholder

    return pattern.sub(one, text), n


def scrub_pii(batch: Batch, kinds: Iterable[str] = PII_KINDS) -> Batch:
    """Scrub the kept rows' texts and add one count column per kind (`pii_email`, ...: what was
    replaced in that row; 0 in rows rejected before). Never rejects a row."""
    kinds = tuple(kinds)
    out = copy_batch(batch)
    columns = {kind: [0] * len(out["text"]) for kind in kinds}
    for i, reason in enumerate(out["reject_reason"]):
        if not reason:
            out["text"][i], counts = scrub_pii_text(out["text"][i], kinds)
            for kind, n in counts.items():
                columns[kind][i] = n
    for kind, column in columns.items():
        out[pii_column(kind)] = column
    return out


# ---------------------------------------------------------------------------------------- all
def quality_filters(batch: Batch, q: QualityConfig) -> Batch:
    """The filters `q` switches on (none unless `q.filters`; a threshold of 0 or None is off),
    cheapest first."""
    if not q.filters:
        return batch
    if q.min_distinct_chars:
        batch = check_distinct_chars(batch, q.min_distinct_chars)
    if q.max_symbol_digit_ratio:
        batch = check_symbols_digits(batch, q.max_symbol_digit_ratio)
    if q.expected_script and q.min_script_ratio:
        batch = check_script(batch, q.expected_script, q.min_script_ratio)
    if q.max_repeated_line_ratio:
        batch = check_repeated_lines(batch, q.max_repeated_line_ratio)
    if q.max_repeated_ngram_ratio:
        batch = check_repeated_ngrams(batch, q.max_repeated_ngram_ratio, q.ngram_size)
    return batch
