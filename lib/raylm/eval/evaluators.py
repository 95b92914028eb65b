"""Validation scoring inside the training loop: per-rank sums that are all-reduced across workers
before metrics are derived from them.

    ev = ClassificationEvaluator(num_labels); ev.update(model_output, batch)
    all_reduce(ev.tensors()); ev.metrics()   # {"val_accuracy": ..., "val_loss": ...}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from raylm.data.collate import IGNORE_INDEX
from raylm.eval.metrics import metrics_from_confusion, perplexity


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
        loss = float(self.nll / self.tokens.clamp(min=1))
        return {
            "val_loss": loss,
            "val_perplexity": float(perplexity(float(self.nll), float(self.tokens))),
        }


class MaskedLMEvaluator:
    """Masked-token accuracy and perplexity over the masked positions (labels != IGNORE), and
    the accuracy where the input hides the token ([MASK] or a random token, 90% of them): only
    context can tell those, while the 10% left unchanged can be copied. A model that has learned
    nothing from context scores there what always guessing the most frequent token scores."""

    def __init__(self, num_labels: int = 0):
        self.nll = torch.zeros((), dtype=torch.float64)
        self.correct = torch.zeros((), dtype=torch.float64)
        self.tokens = torch.zeros((), dtype=torch.float64)
        self.hidden_correct = torch.zeros((), dtype=torch.float64)
        self.hidden = torch.zeros((), dtype=torch.float64)

    def update(self, out: Any, batch: dict[str, torch.Tensor]) -> None:
        labels = batch["labels"]
        scored = labels != IGNORE_INDEX
        hidden = scored & (batch["input_ids"] != labels)
        n = int(scored.sum())
        self.nll += float(out.loss) * n  # the model's loss is the mean over scored positions
        hits = out.logits.argmax(-1) == labels
        self.correct += int(hits[scored].sum())
        self.tokens += n
        self.hidden_correct += int(hits[hidden].sum())
        self.hidden += int(hidden.sum())

    def tensors(self) -> list[torch.Tensor]:
        return [self.nll, self.correct, self.tokens, self.hidden_correct, self.hidden]

    def metrics(self) -> dict[str, float]:
        tokens = float(self.tokens.clamp(min=1))
        return {
            "val_loss": float(self.nll) / tokens,
            "val_masked_accuracy": float(self.correct) / tokens,
            "val_hidden_accuracy": float(self.hidden_correct) / float(self.hidden.clamp(min=1)),
            "val_perplexity": float(perplexity(float(self.nll), float(self.tokens))),
        }


class SpanEvaluator:
    """Extractive QA: loss, and the share of windows holding the answer whose predicted start
    and end tokens are both exactly right (`val_span_accuracy`)."""

    def __init__(self, num_labels: int = 0):
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)
        self.exact = torch.zeros((), dtype=torch.float64)
        self.answerable = torch.zeros((), dtype=torch.float64)

    def update(self, out: Any, batch: dict[str, torch.Tensor]) -> None:
        starts, ends = batch["start_positions"].cpu(), batch["end_positions"].cpu()
        held = starts > 0  # windows that hold the answer ([CLS] = elsewhere)
        hit = out.start_logits.argmax(-1).cpu() == starts
        hit &= out.end_logits.argmax(-1).cpu() == ends
        self.loss_sum += float(out.loss) * len(starts)
        self.count += len(starts)
        self.exact += int((hit & held).sum())
        self.answerable += int(held.sum())

    def tensors(self) -> list[torch.Tensor]:
        return [self.loss_sum, self.count, self.exact, self.answerable]

    def metrics(self) -> dict[str, float]:
        return {
            "val_loss": float(self.loss_sum / self.count.clamp(min=1)),
            "val_span_accuracy": float(self.exact / self.answerable.clamp(min=1)),
        }
