"""Exact and near dedup: python -m pytest tests/unit/data/test_dedup.py -q"""

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
    group = rows(["好书!", "好书", "好书。"], ["pos"] * 3, [30, 10, 20])
    out = dedup.dedup_group(group)
    assert out["reject_reason"] == ["duplicate", "", "duplicate"]


def test_conflicting_labels_drop_every_copy_or_only_the_extra_ones():
    group = rows(["一般", "一般", "一般"], ["pos", "neg", "pos"], [1, 2, 3])
    assert dedup.dedup_group(group)["reject_reason"] == ["conflicting_label"] * 3
    kept_first = dedup.dedup_group(group, drop_conflicting_labels=False)
    assert kept_first["reject_reason"] == ["", "duplicate", "duplicate"]


def test_rejected_rows_are_left_alone_and_singletons_kept():
    group = rows(["x", "x"], ["pos", "neg"], [1, 2], reasons=["too_short", ""])
    assert dedup.dedup_group(group)["reject_reason"] == ["too_short", ""]


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


def test_near_duplicates_found_at_high_similarity_not_at_low():
    texts = {
        "a": LONG,
        "b": LONG[:-1] + "！",  # one char changed: Jaccard ~0.93
        "c": "物流很慢，包装也破了，客服态度很差，不会再在这家店买东西了。",
        "d": LONG[: len(LONG) // 2] + "但是印刷质量太差，纸张很薄，有很多错别字，不推荐购买。",
    }
    sigs = {k: dedup.minhash(t, 64, 5) for k, t in texts.items()}
    bands, rows_ = dedup.lsh_params(0.8, 64)
    pairs = dedup.near_duplicate_pairs(list(sigs), list(sigs.values()), 0.8, bands, rows_)
    assert pairs == {("a", "b")}
    loose = dedup.near_duplicate_pairs(
        list(sigs), list(sigs.values()), 0.2, *dedup.lsh_params(0.2, 64)
    )
    assert ("a", "d") in loose and ("a", "c") not in loose


def test_near_duplicate_drops_keep_the_smallest_id_per_cluster():
    drops = dedup.near_duplicate_drops([("b", "c"), ("a", "b"), ("x", "y")])
    assert drops == {"b": "a", "c": "a", "y": "x"}


def test_stable_id_is_short_and_stable():
    assert dedup.stable_id("好书") == dedup.stable_id("好书") != dedup.stable_id("坏书")
    assert len(dedup.stable_id("好书")) == 16
