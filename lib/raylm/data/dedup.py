"""Exact and near-duplicate detection as pure functions (numpy only; pipeline.py distributes them).

Exact: `dedup_block(rows)` gets batches holding every row of the normalised keys they contain
and, per key, marks all but the first row `duplicate` (or all `conflicting_label` when the copies
disagree on the label).
Near: `minhash` signatures -> `band_keys` (LSH buckets, one row per text and band) ->
`bucket_pairs_block` (pairs within a bucket, verified by estimated Jaccard) ->
`near_duplicate_drops` (one kept per connected cluster).
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

Batch = dict[str, Any]

# 2^31 - 1: hash values and coefficients stay below it, so a*h + b fits in uint64 without overflow.
_PRIME = np.uint64((1 << 31) - 1)


# ------------------------------------------------------------------------------------ exact
def _columns(rows: Batch) -> dict[str, list]:
    n = len(rows["text"])
    cols = {c: _tolist(rows[c]) for c in ("text", "label", "reject_reason")}
    cols["source"] = _tolist(rows["source"]) if "source" in rows else [""] * n
    cols["line"] = _tolist(rows["line"]) if "line" in rows else [-1] * n
    cols["reject_reason"] = [r or "" for r in cols["reject_reason"]]
    return cols


def _order(cols: dict[str, list], i: int) -> tuple:
    """Deterministic "first": earliest source file and line, then text and label as tie-breaks."""
    label = cols["label"][i]
    return (str(cols["source"][i]), int(cols["line"][i]), str(cols["text"][i]), str(label or ""))


def _mark_copies(cols: dict[str, list], idx: list[int], drop_conflicting_labels: bool) -> None:
    """Mark rows `idx` (one key) in place: all but the first `duplicate`, or all conflicting."""
    kept = [i for i in idx if not cols["reject_reason"][i]]
    if len(kept) < 2:
        return
    reasons = cols["reject_reason"]
    if drop_conflicting_labels and len({cols["label"][i] for i in kept}) > 1:
        for i in kept:
            reasons[i] = "conflicting_label"
        return
    first = min(kept, key=lambda i: _order(cols, i))
    for i in kept:
        if i != first:
            reasons[i] = "duplicate"


def dedup_block(rows: Batch, drop_conflicting_labels: bool = True) -> Batch:
    """Mark the copies within every group of equal `key` in a batch that holds whole groups;
    returns the batch with new reasons.

    Per key, the first row (by source file, line, text, label) stays, the rest become
    `duplicate`. With more than one distinct label in the group and `drop_conflicting_labels`,
    every row of it becomes `conflicting_label`. Rows already rejected are left alone.
    """
    cols = _columns(rows)
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(_tolist(rows["key"])):
        groups.setdefault(key, []).append(i)
    for idx in groups.values():
        if len(idx) > 1:
            _mark_copies(cols, idx, drop_conflicting_labels)
    return {**rows, "reject_reason": cols["reject_reason"]}


def _tolist(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


# ------------------------------------------------------------------------------------- near
def shingles(text: str, size: int) -> set[str]:
    """Character shingles of `size`; a text shorter than that is one shingle."""
    if len(text) <= size:
        return {text}
    return {text[i : i + size] for i in range(len(text) - size + 1)}


@functools.cache
def _coefficients(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, int(_PRIME), size=num_perm, dtype=np.uint64)
    b = rng.integers(0, int(_PRIME), size=num_perm, dtype=np.uint64)
    return a, b


def minhash(text: str, num_perm: int = 64, shingle_size: int = 5, seed: int = 1) -> np.ndarray:
    """MinHash signature (uint32[num_perm]) of the text's character shingles.

    Shingles hash with crc32 (stable across processes, unlike `hash()`); permutation i is
    h -> (a_i * h + b_i) mod (2^31 - 1) with seeded a, b.
    """
    hashes = np.fromiter(
        (zlib.crc32(s.encode("utf-8")) for s in shingles(text, shingle_size)), dtype=np.uint64
    )
    a, b = _coefficients(num_perm, seed)
    values = (np.outer(hashes % _PRIME, a) + b) % _PRIME
    return values.min(axis=0).astype(np.uint32)


def jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Estimated Jaccard similarity: the share of equal signature positions."""
    return float(np.mean(np.asarray(sig_a) == np.asarray(sig_b)))


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false positives + false negatives around `threshold`.

    Same criterion as datasketch's MinHashLSH: integrate the banding S-curve below and above it.
    """
    best, best_err = (1, num_perm), float("inf")
    lo, hi = np.linspace(0, threshold, 101), np.linspace(threshold, 1, 101)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - lo**rows) ** bands, lo)
            fn = np.trapezoid((1 - hi**rows) ** bands, hi)
            if fp + fn < best_err:
                best, best_err = (bands, rows), fp + fn
    return best


def band_keys(sig: np.ndarray, bands: int, rows: int) -> list[str]:
    """One bucket key per band; two signatures sharing any key are candidate near-duplicates."""
    sig = np.asarray(sig, dtype=np.uint32)
    keys = []
    for i in range(bands):
        chunk = sig[i * rows : (i + 1) * rows].tobytes()
        keys.append(f"{i}:{hashlib.blake2b(chunk, digest_size=8).hexdigest()}")
    return keys


def verified_pairs(
    ids: list[str], sigs: list[np.ndarray], threshold: float
) -> set[tuple[str, str]]:
    """All pairs within one LSH bucket whose estimated Jaccard reaches the threshold."""
    pairs = set()
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            if ids[i] != ids[j] and jaccard(sigs[i], sigs[j]) >= threshold:
                pairs.add((min(ids[i], ids[j]), max(ids[i], ids[j])))
    return pairs


def bucket_pairs_block(rows: Batch, threshold: float) -> set[tuple[str, str]]:
    """`verified_pairs` within every LSH bucket (`band`) of a batch that holds whole buckets:
    pairs (smaller id, larger id) sharing a bucket whose estimated Jaccard >= threshold."""
    buckets: dict[str, list[int]] = {}
    for i, band in enumerate(_tolist(rows["band"])):
        buckets.setdefault(band, []).append(i)
    ids, sigs = _tolist(rows["id"]), rows["sig"]
    pairs: set[tuple[str, str]] = set()
    for idx in buckets.values():
        if len(idx) > 1:
            pairs |= verified_pairs([ids[i] for i in idx], [sigs[i] for i in idx], threshold)
    return pairs


def near_duplicate_drops(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Union the pairs into clusters; map each id to drop onto its cluster's kept (smallest) id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent) if find(x) != x}


def stable_id(key: str) -> str:
    """Short stable id of a normalised key (blake2b, 16 hex chars) for LSH bookkeeping."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()
