"""Batch inference with an exported model over a Ray Dataset (the platform's own evaluation).

preds = predict_classification(ds, "outputs/sentiment_zh/model")  # adds pred, prob columns
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ClassifierPredictor:
    """Loaded once per Ray Data actor; scores batches of raw texts."""

    def __init__(self, model_dir: str, max_length: int):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.max_length = max_length

    def predict_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (predicted class ids, class probabilities) for raw texts. Thread-safe: grad mode
        is per thread, so inference mode is entered here, not in __init__."""
        import torch

        enc = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        enc.pop("token_type_ids", None)
        with torch.inference_mode():
            probs = self.model(**enc).logits.float().softmax(-1).numpy()
        return probs.argmax(-1), probs

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        preds, probs = self.predict_texts([str(t) for t in batch["text"]])
        return {**batch, "pred": preds.astype(np.int64), "prob": probs.max(-1)}


def predict_classification(ds: Any, model_dir: str, max_length: int = 128, batch_size: int = 128):
    """Lazily add `pred` and `prob` columns to a Dataset with a `text` column."""
    return ds.map_batches(
        ClassifierPredictor,
        fn_constructor_kwargs={"model_dir": str(model_dir), "max_length": max_length},
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=1,  # one actor: the model is loaded once and reused for every batch
    )
