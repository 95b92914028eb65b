"""Classical text-classification baseline: TF-IDF character n-grams + logistic regression.

The number a fine-tuned model has to beat. Character 1-3-grams need no tokenizer, which suits
Chinese. The caller loads the data; this module reads and writes nothing::

    from raylm.eval.baseline import fit_baseline
    out = fit_baseline(train_texts, train_labels, {"val": (val_texts, val_labels)}, num_labels=2)
    out["metrics"]["val"]["accuracy"], out["fit_seconds"], out["pipeline"].predict(["好评"])

scikit-learn is imported inside the function so ``import raylm.eval.baseline`` stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from raylm.eval.metrics import classification_metrics

__all__ = ["build_pipeline", "fit_baseline"]


def build_pipeline(C: float = 1.0, max_iter: int = 1000, min_df: int = 2):
    """Unfitted sklearn Pipeline: char 1-3-gram TF-IDF (sublinear tf) -> LogisticRegression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=min_df
                ),
            ),
            ("clf", LogisticRegression(C=C, max_iter=max_iter, class_weight=None)),
        ]
    )


def fit_baseline(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    eval_sets: Mapping[str, tuple[Sequence[str], Sequence[int]]],
    num_labels: int,
    C: float = 1.0,
    max_iter: int = 1000,
    min_df: int = 2,
) -> dict:
    """Fit on the training set and score every eval set.

    Returns ``{"metrics": {name: classification_metrics(...)}, "fit_seconds": float,
    "pipeline": fitted Pipeline}``; drop ``"pipeline"`` before writing the rest to JSON.
    ``min_df=2`` ignores n-grams seen in one training text only; lower it for toy data.
    """
    if len(train_texts) != len(train_labels):
        raise ValueError(f"{len(train_texts)} train texts but {len(train_labels)} labels")
    if len(set(train_labels)) < 2:
        raise ValueError("the training labels hold a single class; a classifier needs two")
    pipeline = build_pipeline(C=C, max_iter=max_iter, min_df=min_df)
    start = time.perf_counter()
    pipeline.fit(list(train_texts), list(train_labels))
    fit_seconds = time.perf_counter() - start
    metrics = {}
    for name, (texts, labels) in eval_sets.items():
        predicted = pipeline.predict(list(texts)) if len(texts) else []
        metrics[name] = classification_metrics(labels, predicted, num_labels)
    return {"metrics": metrics, "fit_seconds": fit_seconds, "pipeline": pipeline}
