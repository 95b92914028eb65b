"""The batch contract of the pure steps (`steps.py`, `quality.py`), and its three helpers.

A batch is `dict[str, list | np.ndarray]` with at least `text`, `label` and `reject_reason`
("" = kept). A step only touches kept rows and returns a new batch (numpy in, lists out); a step
that rejects a row writes a short snake_case reason. Other columns pass through untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Batch = dict[str, Any]
KEPT = ""


def copy_batch(batch: Batch) -> Batch:
    """Shallow copy with the three contract columns as fresh Python lists (numpy in, lists out)."""
    out = dict(batch)
    for col in ("text", "label", "reject_reason"):
        values = batch[col]
        out[col] = values.tolist() if hasattr(values, "tolist") else list(values)
    out["text"] = ["" if t is None else str(t) for t in out["text"]]
    out["reject_reason"] = [r or KEPT for r in out["reject_reason"]]
    return out


def map_text(batch: Batch, fn: Callable[[str], str]) -> Batch:
    """`fn` applied to the text of every kept row."""
    out = copy_batch(batch)
    texts = out["text"]
    for i, reason in enumerate(out["reject_reason"]):
        if not reason:
            texts[i] = fn(texts[i])
    return out


def reject_if(batch: Batch, pred: Callable[[str], bool], reason: str) -> Batch:
    """Kept rows whose text `pred` holds for get `reason`."""
    out = copy_batch(batch)
    reasons = out["reject_reason"]
    for i, text in enumerate(out["text"]):
        if not reasons[i] and pred(text):
            reasons[i] = reason
    return out
