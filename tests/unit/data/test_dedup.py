"""Exact and near dedup: python -m pytest tests/unit/data/test_dedup.py -q

Through the functions the pipeline calls (raylm.data.pipeline): `dedup_block` on blocks of
whole key groups; `minhash` -> `band_keys` rows -> `bucket_pairs_block` on blocks of whole
buckets -> `near_duplicate_drops`.
"""

import numpy as np
import pytest

from raylm.data import dedup


def rows(texts, labels, lines, reasons=None, key="k"):
    n = len(texts)
    return {
        "text": texts,
        "label": labels,
        "reject_reason": reasons or [""] * n,
        "source": ["a.txt"] * n,
        "line": lines,
        "key": [key] * n,
    }


def test_duplicates_keep_the_earliest_row_whatever_the_input_order():
    group = rows(["好书!", "好书", "好书。"], ["pos"] * 3, [30, 10, 20])  # one key
    out = dedup.dedup_block(group)
    assert out["reject_reason"] == ["duplicate", "", "duplicate"]
    assert out["text"] == group["text"] and out["line"] == group["line"]  # only reasons change
    # Input order does not matter: the same row (line 10) stays when the rows come rotated.
    rotated = {k: v[1:] + v[:1] for k, v in group.items()}
    out = dedup.dedup_block(rotated)
    assert out["reject_reason"] == ["", "duplicate", "duplicate"] and out["text"][0] == "好书"


def test_conflicting_labels_drop_every_copy_or_only_the_extra_ones():
    group = rows(["一般", "一般", "一般"], ["pos", "neg", "pos"], [1, 2, 3])
    assert dedup.dedup_block(group)["reject_reason"] == ["conflicting_label"] * 3
    kept_first = dedup.dedup_block(group, drop_conflicting_labels=False)
    assert kept_first["reject_reason"] == ["", "duplicate", "duplicate"]


def test_rejected_rows_are_left_alone_and_singletons_kept():
    group = rows(["x", "x"], ["pos", "neg"], [1, 2], reasons=["too_short", ""])
    assert dedup.dedup_block(group)["reject_reason"] == ["too_short", ""]


def test_dedup_block_handles_many_keys_at_once():
    block = rows(["a", "b", "a", "c", "c"], ["pos", "pos", "pos", "pos", "neg"], [1, 2, 3, 4, 5])
    block["key"] = ["a", "b", "a", "c", "c"]
    out = dedup.dedup_block(block)
    assert out["reject_reason"] == ["", "", "duplicate", "conflicting_label", "conflicting_label"]


# ------------------------------------------------------------------------------------ near
LONG = "这本书的内容非常丰富，作者从多个角度分析了问题，语言通俗易懂，适合初学者阅读，强烈推荐。"


def test_minhash_is_deterministic_and_estimates_jaccard():
    a = dedup.minhash(LONG, 128, 3)
    assert a.dtype == np.uint32 and a.shape == (128,)
    assert np.array_equal(a, dedup.minhash(LONG, 128, 3))
    other = LONG.replace("初学者", "专业人士")
    sa, sb = dedup.shingles(LONG, 3), dedup.shingles(other, 3)
    true_j = len(sa & sb) / len(sa | sb)
    assert dedup.jaccard(a, dedup.minhash(other, 128, 3)) == pytest.approx(true_j, abs=0.15)


def test_lsh_params_fit_the_permutations_and_follow_the_threshold():
    for threshold in (0.5, 0.8, 0.95):
        bands, rows_ = dedup.lsh_params(threshold, 64)
        assert bands * rows_ <= 64
    assert dedup.lsh_params(0.95, 64)[1] > dedup.lsh_params(0.5, 64)[1]


def _bucket_rows(sigs: dict, bands: int, rows_: int) -> dict:
    """The rows `bucket_pairs_block` gets in the pipeline (`_band_rows` there): one per text and
    LSH band, `sig` as one 2-D array."""
    table = {"band": [], "id": [], "sig": []}
    for id_, sig in sigs.items():
        for band in dedup.band_keys(sig, bands, rows_):
            table["band"].append(band)
            table["id"].append(id_)
            table["sig"].append(sig)
    return {**table, "sig": np.array(table["sig"])}


NEAR_TEXTS = {
    "a": LONG,
    "b": LONG[:-1] + "！",  # one char changed: Jaccard ~0.93
    "c": "物流很慢，包装也破了，客服态度很差，不会再在这家店买东西了。",
    "d": LONG[: len(LONG) // 2] + "但是印刷质量太差，纸张很薄，有很多错别字，不推荐购买。",
}


def test_near_duplicates_found_at_high_similarity_not_at_low():
    sigs = {k: dedup.minhash(t, 64, 5) for k, t in NEAR_TEXTS.items()}
    bands, rows_ = dedup.lsh_params(0.8, 64)
    pairs = dedup.bucket_pairs_block(_bucket_rows(sigs, bands, rows_), 0.8)
    assert pairs == {("a", "b")}
    loose = dedup.bucket_pairs_block(_bucket_rows(sigs, *dedup.lsh_params(0.2, 64)), 0.2)
    assert ("a", "d") in loose and ("a", "c") not in loose
    assert dedup.near_duplicate_drops(pairs) == {"b": "a"}  # the pipeline drops "b", keeps "a"


def test_bucket_pairs_are_the_same_from_blocks_of_whole_buckets():
    # The pipeline hash-partitions the bucket rows by band: each block holds whole buckets, and
    # the pairs of all blocks together are those of one block holding everything.
    sigs = {k: dedup.minhash(t, 64, 5) for k, t in NEAR_TEXTS.items()}
    table = _bucket_rows(sigs, *dedup.lsh_params(0.2, 64))
    whole = dedup.bucket_pairs_block(table, 0.2)
    assert len(whole) >= 2  # enough pairs for the split to matter
    parts = 3
    blocks = [
        [i for i, b in enumerate(table["band"]) if sum(map(ord, b)) % parts == p]
        for p in range(parts)
    ]
    assert all(blocks)
    split = set()
    for idx in blocks:
        block = {"band": [table["band"][i] for i in idx], "id": [table["id"][i] for i in idx]}
        split |= dedup.bucket_pairs_block({**block, "sig": table["sig"][idx]}, 0.2)
    assert split == whole


def test_near_duplicate_drops_keep_the_smallest_id_per_cluster():
    drops = dedup.near_duplicate_drops([("b", "c"), ("a", "b"), ("x", "y")])
    assert drops == {"b": "a", "c": "a", "y": "x"}


def test_stable_id_is_short_and_stable():
    assert dedup.stable_id("好书") == dedup.stable_id("好书") != dedup.stable_id("坏书")
    assert len(dedup.stable_id("好书")) == 16
