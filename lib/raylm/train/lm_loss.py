"""The causal-LM loss over labelled positions only, in chunks, for batches whose labels are
mostly -100 (QA and prompt-masked fine-tuning: only the answer tokens train).

A Hugging Face causal LM computes logits at every position, `batch x length x vocab` floats,
then throws away all but the labelled ones in its cross-entropy. Here the model runs with
`logits_to_keep=1` (its head at one position) and hands back its final hidden states; the
output projection then runs only on the labelled positions, `chunk` rows at a time, each chunk
under activation checkpointing so its logits are freed after its loss is summed (backward
recomputes them). The loss equals the model's own (mean over labelled tokens) to float
rounding; pure torch, so CPUs gain too.

    loss = labelled_loss(engine_or_model, batch)     # batch: input_ids, attention_mask, labels
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
CHUNK_ROWS = 1024  # labelled positions per projection: 1024 x vocab floats at a time


def supports_labelled_loss(model: torch.nn.Module) -> bool:
    """Whether `model` (a causal LM, possibly under LoRA) can skip its own head: it takes
    `logits_to_keep` and has an output projection."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    forward = inspect.signature(base.forward).parameters
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    return "logits_to_keep" in forward and head is not None


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor):
    logits = head(hidden).float()  # as transformers' loss upcasts
    return F.cross_entropy(logits, targets, reduction="sum")


def labelled_loss(
    model: Any, batch: dict[str, torch.Tensor], chunk: int = CHUNK_ROWS
) -> torch.Tensor:
    """Mean cross-entropy of the next token over the positions whose label is not -100.

    `model` is the module or the DeepSpeed engine wrapping it (called as a whole, so ZeRO's
    hooks run); its output projection is found on the wrapped module."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1][:, :-1]  # position t predicts label t+1
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    hidden, targets = hidden[keep], targets[keep]
    module = getattr(model, "module", model)
    head = module.get_output_embeddings()
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), chunk):
        piece = slice(start, start + chunk)
        total = total + checkpoint(
            _chunk_loss, head, hidden[piece], targets[piece], use_reentrant=False
        )
    # The mean over labelled tokens; a batch with none gives 0 (with a gradient graph).
    return total / max(int(keep.sum()), 1) + 0.0 * out.logits.sum()
