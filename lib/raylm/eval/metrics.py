"""Classification metrics and perplexity (numpy only, no Ray/torch import).

Single process::

    from raylm.eval.metrics import classification_metrics
    m = classification_metrics(y_true, y_pred, num_labels=2)   # m["accuracy"], m["f1"], ...

Distributed eval: each worker builds its own confusion matrix, the matrices are summed
(all-reduce, or ``sum`` of the per-worker results on the driver), and the metrics are computed once
from the total, so they equal the single-process numbers exactly::

    cm = confusion_counts(y_true_shard, y_pred_shard, num_labels)   # on each worker
    m = metrics_from_confusion(sum(all_cms))                         # once

Conventions: ``f1``/``precision``/``recall`` are for the positive class 1 when ``num_labels == 2``
and the unweighted (macro) mean over all ``num_labels`` classes otherwise; macro F1 is the mean
of per-class F1 (scikit-learn's definition), not the F1 of macro precision and recall. A ratio
whose denominator is 0 (a class never predicted, or absent) counts as 0, as scikit-learn's
``zero_division=0`` does. Everything returned is plain Python (JSON-ready).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "classification_metrics",
    "confusion_counts",
    "metrics_from_confusion",
    "perplexity",
]


def confusion_counts(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_labels: int
) -> np.ndarray:
    """The ``num_labels x num_labels`` int64 count matrix: rows = true, columns = predicted."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = arr[(arr < 0) | (arr >= num_labels)]
        if bad.size:
            raise ValueError(f"{name} holds label {int(bad[0])}, outside 0..{num_labels - 1}")
    # One bincount over the flattened (true, pred) index is the whole matrix in a single pass.
    flat = np.bincount(t * num_labels + p, minlength=num_labels * num_labels)
    return flat.reshape(num_labels, num_labels).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def metrics_from_confusion(cm: np.ndarray | Sequence[Sequence[int]]) -> dict:
    """Accuracy, precision, recall, F1 (binary or macro), per-class values and the matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    n = cm.shape[0]
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)  # true count per class
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = int(cm.sum())
    binary = n == 2
    pick = (lambda v: float(v[1])) if binary else (lambda v: float(v.mean()))
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision": pick(precision),
        "recall": pick(recall),
        "f1": pick(f1),
        "average": "binary" if binary else "macro",
        "count": total,
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.tolist(),
        },
        "confusion_matrix": cm.tolist(),
    }


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_labels: int
) -> dict:
    """All classification metrics for one set of integer labels (see module docstring)."""
    return metrics_from_confusion(confusion_counts(y_true, y_pred, num_labels))


def perplexity(total_nll: float, total_tokens: int | float) -> float:
    """``exp(total_nll / total_tokens)``: sum the NLL (nats) and token counts over workers first."""
    total_nll, total_tokens = float(total_nll), float(total_tokens)
    if total_tokens <= 0:
        raise ValueError(f"total_tokens must be > 0, got {total_tokens}")
    mean = total_nll / total_tokens
    # math.exp raises OverflowError above ~709; an untrained model can get there.
    return math.exp(mean) if mean < 700 else math.inf
