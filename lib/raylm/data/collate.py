"""Collation: a Ray Data numpy batch of encoded rows -> padded model inputs (torch tensors).

    batch = collate_classification(numpy_batch, pad_id)   # input_ids, attention_mask, labels
    batch = collate_lm(numpy_batch, pad_id)               # labels padded with -100
    batch = collate_spans(numpy_batch, pad_id)            # + token_type_ids, start/end_positions

Rows are padded to the batch's longest row, not to max_length. Used by the training loop (each
task names its collate) and by batch inference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100


def pad_rows(rows: Any, pad_value: int, dtype=np.int64) -> np.ndarray:
    rows = [np.asarray(r) for r in rows]
    width = max((len(r) for r in rows), default=1)
    out = np.full((len(rows), max(width, 1)), pad_value, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def padded_ids(rows: Any, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of token ids padded to the longest with pad_id, and their attention mask."""
    ids = pad_rows(rows, pad_id)
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(ids))
    return ids, (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)


def collate_classification(batch: dict[str, Any], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad variable-length `input_ids` to the batch's longest row (not to max_length)."""
    ids, mask = padded_ids(batch["input_ids"], pad_id)
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(np.array(batch["labels"], dtype=np.int64)),  # a writable copy
    }


def collate_lm(batch: dict[str, Any], pad_id: int) -> dict[str, torch.Tensor]:
    """Causal LM / QA: pad ids with pad_id and labels with -100 (padding never scores)."""
    ids, mask = padded_ids(batch["input_ids"], pad_id)
    labels = pad_rows(batch["labels"], IGNORE_INDEX)
    out = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(labels),
    }
    if "position_ids" in batch:
        out["position_ids"] = torch.from_numpy(pad_rows(batch["position_ids"], 0))
    return out


def collate_spans(batch: dict[str, Any], pad_id: int) -> dict[str, torch.Tensor]:
    """Extractive QA windows: ids, segment ids, mask, and the answer's start/end token."""
    ids, mask = padded_ids(batch["input_ids"], pad_id)
    return {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(pad_rows(batch["token_type_ids"], 0)),
        "attention_mask": torch.from_numpy(mask),
        "start_positions": torch.from_numpy(np.array(batch["start_positions"], dtype=np.int64)),
        "end_positions": torch.from_numpy(np.array(batch["end_positions"], dtype=np.int64)),
    }


def count_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Non-padding tokens, as a tensor on the batch's device (no host sync per step)."""
    return batch["attention_mask"].sum()
