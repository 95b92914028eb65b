"""Pure batch -> batch cleaning steps (no Ray import: unit-test them on plain dicts).

A batch is `dict[str, list | np.ndarray]` with at least `text`, `label` and `reject_reason`
("" = kept; the contract is `batch.py`'s). A step only touches kept rows and returns a new
batch; a step that rejects a row writes a short snake_case reason. Run them all as configured:

    batch = clean_batch({"text": [...], "label": [...], "reject_reason": [""] * n}, cfg.data)

The quality filters and PII scrubbing that `clean_batch` also runs live in `quality.py`.
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
import sys
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING

from raylm.data import quality
from raylm.data.batch import Batch, copy_batch, map_text, reject_if

if TYPE_CHECKING:
    from raylm.config import DataConfig, SplitConfig

# ----------------------------------------------------------------------------------- helpers


@functools.cache
def _char_tables() -> tuple[re.Pattern[str], frozenset[str]]:
    """Control/format chars to delete and punctuation chars, from one scan of Unicode (cached)."""
    control: list[int] = []
    punct: list[str] = []
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        # Whitespace controls (\t \n \r ...) stay: the whitespace step folds them into spaces.
        if cat == "Cf" or (cat == "Cc" and not ch.isspace()):
            control.append(cp)
        elif cat.startswith("P"):
            punct.append(ch)
    return re.compile(_char_class(control)), frozenset(punct)


def _char_class(codepoints: list[int]) -> str:
    """A regex class of sorted code points, runs written as ranges (much faster to match)."""
    runs: list[list[int]] = []
    for cp in codepoints:
        if runs and cp == runs[-1][1] + 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    parts = [re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in runs]
    return "[" + "".join(parts) + "]"


# ------------------------------------------------------------------------------- text steps
_DATE_ID = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}/m$")
# `word/tag`, optionally opening a bracketed compound (`[中国/ns`) or closing one (`政府/n]nt`).
_TAGGED = re.compile(r"^\[?(.+?)/[A-Za-z]+(?:\][A-Za-z]+)?$")


def strip_pos_text(line: str) -> str:
    """`19980101-01-001-001/m  迈向/v  [中国/ns  政府/n]nt` -> `迈向中国政府`."""
    tokens = line.split()
    if tokens and _DATE_ID.match(tokens[0]):
        tokens = tokens[1:]
    words = []
    for tok in tokens:
        m = _TAGGED.match(tok)
        words.append(m.group(1) if m else tok)
    return "".join(words)


def strip_pos_tags(batch: Batch) -> Batch:
    return map_text(batch, strip_pos_text)


def nfkc(batch: Batch) -> Batch:
    """Unicode NFKC: folds full-width letters/digits/punctuation to their ASCII forms."""
    return map_text(batch, lambda t: unicodedata.normalize("NFKC", t))


def strip_control(batch: Batch) -> Batch:
    pattern = _char_tables()[0]
    return map_text(batch, lambda t: pattern.sub("", t))


_HTML_BLOCK = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
# Block-level tags separate words; inline ones (<b>, <span>) sit inside CJK text and must not.
_HTML_BREAK = re.compile(
    r"</?(?:br|p|div|li|ul|ol|tr|td|th|h[1-6]|table|section|article|blockquote)\b[^<>]*>", re.I
)
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")


def strip_html_text(text: str) -> str:
    if "<" in text:
        text = _HTML_BLOCK.sub(" ", text)
        text = _HTML_COMMENT.sub("", text)
        text = _HTML_BREAK.sub(" ", text)
        text = _HTML_TAG.sub("", text)
    # Unescape after removing tags, so an escaped `&lt;b&gt;` survives as literal text.
    return html.unescape(text) if "&" in text else text


def strip_html(batch: Batch) -> Batch:
    return map_text(batch, strip_html_text)


# ASCII URL characters only: CJK text often runs straight on after a URL with no space.
_URL = re.compile(r"(?:https?://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'*+,;=%]+", re.I)
_URL_TRAIL = ".,;:!?'"


def strip_urls_text(text: str) -> str:
    if "http" not in text.lower() and "www." not in text.lower():
        return text

    def keep_trailing(m: re.Match[str]) -> str:
        url = m.group(0)
        return url[len(url.rstrip(_URL_TRAIL)) :]

    return _URL.sub(keep_trailing, text)


def strip_urls(batch: Batch) -> Batch:
    return map_text(batch, strip_urls_text)


_SPACES = re.compile(r"\s+")


def normalize_whitespace(batch: Batch) -> Batch:
    return map_text(batch, lambda t: _SPACES.sub(" ", t).strip())


# ------------------------------------------------------------------------------ filter steps
def check_length(batch: Batch, min_chars: int, max_chars: int) -> Batch:
    """Reject `empty` (no chars), `too_short` (< min_chars) and `too_long` (> max_chars)."""
    out = copy_batch(batch)
    reasons = out["reject_reason"]
    for i, text in enumerate(out["text"]):
        if reasons[i]:
            continue
        n = len(text)
        if n == 0:
            reasons[i] = "empty"
        elif n < min_chars:
            reasons[i] = "too_short"
        elif n > max_chars:
            reasons[i] = "too_long"
    return out


# Letters, digits and `_`; the rare rest is classified char by char below.
_NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]")


def noise_ratio(text: str) -> float:
    """Share of chars that are not letters, digits, marks, punctuation or spaces (or are U+FFFD);
    the symbols reviews punctuate with (`~+=$¥€£°`) are none (`quality.is_symbol`)."""
    if not text:
        return 0.0
    return sum(map(quality.is_symbol, _NOT_WORD_OR_SPACE.findall(text))) / len(text)


def check_noise(batch: Batch, max_ratio: float) -> Batch:
    return reject_if(batch, lambda t: noise_ratio(t) > max_ratio, "noisy")


def check_labels(batch: Batch, labels: list[str] | None) -> Batch:
    """Reject `missing_label` (None/blank) and, given a label list, `unknown_label`."""
    out = copy_batch(batch)
    reasons, values = out["reject_reason"], out["label"]
    allowed = None if labels is None else set(labels)
    for i, label in enumerate(values):
        if reasons[i]:
            continue
        if label is None or not str(label).strip():
            reasons[i] = "missing_label"
        elif allowed is not None and label not in allowed:
            reasons[i] = "unknown_label"
    return out


def clean_batch(batch: Batch, data_cfg: DataConfig) -> Batch:
    """Run the cleaning steps in CleanConfig's order, PII scrubbing (`clean.quality.scrub_pii`),
    then the length and noise checks, the quality filters and the label checks.

    Scrubbing comes after the text steps (HTML stripping would take `<EMAIL>` for a tag) and
    before every check, so lengths are those of the text kept and no PII reaches the rejects
    file or the dedup keys. Label checks run only when `data_cfg.label_column` is set.
    """
    c = data_cfg.clean
    switched: list[tuple[bool, Callable[[Batch], Batch]]] = [
        (c.strip_pos_tags, strip_pos_tags),
        (c.nfkc, nfkc),
        (c.strip_control, strip_control),
        (c.strip_html, strip_html),
        (c.strip_urls, strip_urls),
        (c.normalize_whitespace, normalize_whitespace),
    ]
    out = copy_batch(batch)
    for enabled, step in switched:
        if enabled:
            out = step(out)
    if c.quality.scrub_pii:
        out = quality.scrub_pii(out, c.quality.scrub_pii)
    out = check_length(out, c.min_chars, c.max_chars)
    if c.max_noise_ratio < 1:
        out = check_noise(out, c.max_noise_ratio)
    out = quality.quality_filters(out, c.quality)
    if data_cfg.label_column is not None:
        out = check_labels(out, data_cfg.labels)
    return out


# ------------------------------------------------------------------------------ keys, splits
def normalize_key(text: str) -> str:
    """The form used for dedup and split: NFKC, lowercase, no whitespace, no punctuation.

    A text made only of punctuation keeps its punctuation, so it does not collide with "".
    """
    s = _SPACES.sub("", unicodedata.normalize("NFKC", text).lower())
    punct = _char_tables()[1]
    stripped = "".join(ch for ch in s if ch not in punct) if _NOT_WORD_OR_SPACE.search(s) else s
    stripped = stripped.replace("_", "")
    return stripped or s


def add_key(batch: Batch) -> Batch:
    """Add the `key` column (normalize_key of kept rows; "" for rejected ones)."""
    out = copy_batch(batch)
    out["key"] = [
        normalize_key(t) if not r else ""
        for t, r in zip(out["text"], out["reject_reason"], strict=True)
    ]
    return out


def split_of(key: str, split_cfg: SplitConfig) -> str:
    """`train`, `validation` or `test`, from a stable hash of salt + key (same key, same split)."""
    digest = hashlib.blake2b(f"{split_cfg.salt}\x00{key}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < split_cfg.test:
        return "test"
    if u < split_cfg.test + split_cfg.validation:
        return "validation"
    return "train"


def split_of_passage(context: str, split_cfg: SplitConfig) -> str:
    """The split of a reading-comprehension question: its passage's (a passage never crosses
    splits). The QA reader splits by it; `data.heldout_of` holds out by it."""
    return split_of(normalize_key(context), split_cfg)


def label_to_id(label: str | None, labels: list[str] | None) -> int:
    """Class id of `label` in `labels` order; -1 without labels. Unknown labels raise KeyError."""
    if labels is None or label is None:
        return -1
    try:
        return labels.index(label)
    except ValueError:
        raise KeyError(f"label {label!r} is not one of {labels}") from None
