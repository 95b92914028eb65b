"""Classification metrics against hand-computed values and scikit-learn.

Run: python -m pytest tests/unit/eval/test_eval_metrics.py -q
"""

import math

import numpy as np
import pytest

from raylm.eval.metrics import (
    classification_metrics,
    confusion_counts,
    metrics_from_confusion,
    perplexity,
)


def _labels_from_matrix(cm):
    """(y_true, y_pred) lists that produce exactly the confusion matrix ``cm``."""
    y_true, y_pred = [], []
    for t, row in enumerate(cm):
        for p, count in enumerate(row):
            y_true += [t] * count
            y_pred += [p] * count
    return y_true, y_pred


def test_binary_hand_computed():
    # true 1 x4 (3 right), true 0 x6 (4 right): TP=3 FP=2 FN=1 TN=4
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    m = classification_metrics(y_true, y_pred, num_labels=2)
    assert m["confusion_matrix"] == [[4, 2], [1, 3]]
    assert m["average"] == "binary"
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(3 / 5)  # positive class 1 only
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["precision"] == pytest.approx([4 / 5, 3 / 5])
    assert m["per_class"]["recall"] == pytest.approx([4 / 6, 3 / 4])
    assert m["per_class"]["f1"] == pytest.approx([8 / 11, 2 / 3])
    assert m["per_class"]["support"] == [6, 4]
    assert m["count"] == 10


def test_three_class_macro_hand_computed():
    cm = [[5, 1, 0], [2, 3, 1], [0, 1, 4]]
    m = classification_metrics(*_labels_from_matrix(cm), num_labels=3)
    assert m["confusion_matrix"] == cm
    assert m["average"] == "macro"
    assert m["accuracy"] == pytest.approx(12 / 17)
    assert m["per_class"]["precision"] == pytest.approx([5 / 7, 3 / 5, 4 / 5])
    assert m["per_class"]["recall"] == pytest.approx([5 / 6, 1 / 2, 4 / 5])
    assert m["per_class"]["f1"] == pytest.approx([10 / 13, 6 / 11, 4 / 5])
    assert m["precision"] == pytest.approx((5 / 7 + 3 / 5 + 4 / 5) / 3)
    assert m["recall"] == pytest.approx((5 / 6 + 1 / 2 + 4 / 5) / 3)
    # Macro F1 is the mean of per-class F1, not the F1 of macro precision and recall.
    assert m["f1"] == pytest.approx((10 / 13 + 6 / 11 + 4 / 5) / 3)


def test_class_never_predicted_counts_zero_not_nan():
    m = classification_metrics([0, 1, 2, 2], [0, 1, 1, 1], num_labels=3)
    assert m["per_class"]["precision"][2] == 0.0
    assert m["per_class"]["f1"][2] == 0.0
    assert all(math.isfinite(v) for v in (m["precision"], m["recall"], m["f1"]))


@pytest.mark.parametrize("num_labels", [2, 4])
def test_matches_sklearn(num_labels):
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(num_labels)
    y_true = rng.integers(0, num_labels, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, num_labels, 300))
    average = "binary" if num_labels == 2 else "macro"
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, average=average, labels=list(range(num_labels)), zero_division=0
    )
    m = classification_metrics(y_true, y_pred, num_labels)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((p, r, f))


def test_confusion_of_shards_sums_to_whole():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 1000)
    y_pred = np.where(rng.random(1000) < 0.7, y_true, rng.integers(0, 3, 1000))
    cuts = [0, 137, 600, 1000]  # uneven "workers"
    shards = [
        confusion_counts(y_true[a:b], y_pred[a:b], 3) for a, b in zip(cuts, cuts[1:], strict=False)
    ]
    total = sum(shards)
    assert total.dtype == np.int64
    np.testing.assert_array_equal(total, confusion_counts(y_true, y_pred, 3))
    assert metrics_from_confusion(total) == classification_metrics(y_true, y_pred, 3)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="y_pred holds label 2"):
        confusion_counts([0, 1], [0, 2], num_labels=2)
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        confusion_counts([0, 1, 1], [0, 1], num_labels=2)
    with pytest.raises(ValueError, match="square"):
        metrics_from_confusion([[1, 2, 3]])


def test_empty_input_gives_zeros():
    m = classification_metrics([], [], num_labels=2)
    assert m["count"] == 0 and m["accuracy"] == 0.0 and m["f1"] == 0.0


def test_perplexity():
    assert perplexity(5 * math.log(10.0), 5) == pytest.approx(10.0)
    assert perplexity(0.0, 3) == 1.0
    assert perplexity(1e6, 1) == math.inf  # no OverflowError for a diverged model
    with pytest.raises(ValueError, match="total_tokens"):
        perplexity(1.0, 0)
