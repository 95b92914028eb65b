"""Near-dedup accuracy on generated pairs: python -m pytest tests/unit/data/test_near_accuracy.py -q

Pairs of known shingle Jaccard (`synthetic.near_pairs`) go through the functions the pipeline
calls (raylm.data.pipeline `_band_rows` -> `_bucket_pairs`): `minhash` -> one row per
`band_keys` key with the text's `stable_id` -> `bucket_pairs_block`, all in one batch. Recall is
measured on pairs at least 0.1 above the threshold, the false-positive rate on pairs at least
0.2 below it.
"""

import functools

import numpy as np
import pytest

from raylm.data import dedup
from raylm.data.synthetic import near_pairs

NUM_PERM, SHINGLE = 64, 5  # config defaults
MIN_BIN = 200


@functools.cache
def generated():
    """3000 pairs (about 240 at Jaccard >= 0.9), their ids, true Jaccard and signatures."""
    pairs = near_pairs(3000, seed=0, shingle_size=SHINGLE)
    texts = [t for a, b, _ in pairs for t in (a, b)]
    ids = [dedup.stable_id(t) for t in texts]
    assert len(set(ids)) == len(ids)  # every text distinct, within and across pairs
    sigs = [dedup.minhash(t, NUM_PERM, SHINGLE) for t in texts]
    true_j = np.array([j for _, _, j in pairs])
    return ids, sigs, true_j


def detected(threshold, bands, rows):
    """Per pair: whether `bucket_pairs_block` reports it, with LSH (bands, rows)."""
    ids, sigs, _ = generated()
    batch = {"band": [], "id": [], "sig": []}
    for id_, sig in zip(ids, sigs, strict=True):
        for band in dedup.band_keys(sig, bands, rows):
            batch["band"].append(band)
            batch["id"].append(id_)
            batch["sig"].append(sig)
    batch["sig"] = np.stack(batch["sig"])
    found = dedup.bucket_pairs_block(batch, threshold)
    return np.array(
        [(min(a, b), max(a, b)) in found for a, b in zip(ids[::2], ids[1::2], strict=True)]
    )


def rates(hit, true_j, threshold):
    high, low = true_j >= round(threshold + 0.1, 6), true_j <= round(threshold - 0.2, 6)
    assert high.sum() >= MIN_BIN and low.sum() >= MIN_BIN, (high.sum(), low.sum())
    return hit[high].mean(), hit[low].mean(), high.sum(), low.sum()


@pytest.mark.parametrize("threshold", [0.8, 0.6])
def test_recall_and_false_positive_rate(threshold):
    bands, rows = dedup.lsh_params(threshold, NUM_PERM)
    recall, fpr, n_high, n_low = rates(detected(threshold, bands, rows), generated()[2], threshold)
    figures = (
        f"threshold {threshold} (bands {bands}, rows {rows}): recall {recall:.3f} over "
        f"{n_high} pairs with J >= {threshold + 0.1:.1f}, FPR {fpr:.3f} over {n_low} pairs "
        f"with J <= {threshold - 0.2:.1f}"
    )
    print(figures)
    assert recall >= 0.9, figures
    assert fpr <= 0.05, figures


def test_too_strict_lsh_fails_the_recall_bar():
    """The measurement can fail: one band of all 64 rows finds almost no near pair."""
    recall, fpr, _, _ = rates(detected(0.8, 1, NUM_PERM), generated()[2], 0.8)
    print(f"bands 1, rows {NUM_PERM}: recall {recall:.3f}, FPR {fpr:.3f}")
    assert recall < 0.9, recall
