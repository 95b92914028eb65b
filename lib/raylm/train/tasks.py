"""Per-task pieces of the step loop: how a batch is collated and how validation is scored.

Each task has a `collate(batch, pad_id)` turning a Ray Data numpy batch into model inputs, and an
`Evaluator` that accumulates per-rank sums which are all-reduced before metrics are derived.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100


def _pad(rows: Any, pad_value: int, dtype=np.int64) -> np.ndarray:
    rows = [np.asarray(r) for r in rows]
    width = max((len(r) for r in rows), default=1)
    out = np.full((len(rows), max(width, 1)), pad_value, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def collate_classification(batch: dict[str, Any], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad variable-length `input_ids` to the batch's longest row (not to max_length)."""
    ids = _pad(batch["input_ids"], pad_id)
    lengths = np.fromiter((len(r) for r in batch["input_ids"]), dtype=np.int64, count=len(ids))
    mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(np.array(batch["labels"], dtype=np.int64)),  # a writable copy
    }


def collate_lm(batch: dict[str, Any], pad_id: int) -> dict[str, torch.Tensor]:
    """Causal LM / QA: pad ids with pad_id and labels with -100 (padding never scores)."""
    ids = _pad(batch["input_ids"], pad_id)
    labels = _pad(batch["labels"], IGNORE_INDEX)
    lengths = np.fromiter((len(r) for r in batch["input_ids"]), dtype=np.int64, count=len(ids))
    mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
    out = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(labels),
    }
    if "position_ids" in batch:
        out["position_ids"] = torch.from_numpy(_pad(batch["position_ids"], 0))
    return out


def count_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Non-padding tokens, as a tensor on the batch's device (no host sync per step)."""
    return batch["attention_mask"].sum()


class ClassificationEvaluator:
    """Sums a confusion matrix and the loss; metrics come from the all-reduced sums."""

    def __init__(self, num_labels: int):
        self.num_labels = num_labels
        self.cm = torch.zeros(num_labels, num_labels, dtype=torch.float64)
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    def update(self, out: Any, batch: dict[str, torch.Tensor]) -> None:
        labels = batch["labels"].cpu()
        preds = out.logits.argmax(-1).cpu()
        idx = labels * self.num_labels + preds
        self.cm += torch.bincount(idx, minlength=self.num_labels**2).view_as(self.cm).double()
        self.loss_sum += float(out.loss) * len(labels)
        self.count += len(labels)

    def tensors(self) -> list[torch.Tensor]:
        return [self.cm, self.loss_sum, self.count]

    def metrics(self) -> dict[str, float]:
        from raylm.eval.metrics import metrics_from_confusion

        m = metrics_from_confusion(self.cm.numpy().astype(np.int64))
        out = {f"val_{k}": float(m[k]) for k in ("accuracy", "precision", "recall", "f1")}
        out["val_loss"] = float(self.loss_sum / self.count.clamp(min=1))
        return out


class LMEvaluator:
    """Token-weighted loss over scored positions -> perplexity."""

    def __init__(self, num_labels: int = 0):
        self.nll = torch.zeros((), dtype=torch.float64)
        self.tokens = torch.zeros((), dtype=torch.float64)

    def update(self, out: Any, batch: dict[str, torch.Tensor]) -> None:
        # HF shifts labels inside the model; count the positions that actually score.
        scored = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        self.nll += float(out.loss) * scored
        self.tokens += scored

    def tensors(self) -> list[torch.Tensor]:
        return [self.nll, self.tokens]

    def metrics(self) -> dict[str, float]:
        from raylm.eval.metrics import perplexity

        loss = float(self.nll / self.tokens.clamp(min=1))
        return {
            "val_loss": loss,
            "val_perplexity": float(perplexity(float(self.nll), float(self.tokens))),
        }


COLLATE = {"classification": collate_classification, "causal_lm": collate_lm, "qa": collate_lm}
EVALUATORS = {
    "classification": ClassificationEvaluator,
    "causal_lm": LMEvaluator,
    "qa": LMEvaluator,
}
