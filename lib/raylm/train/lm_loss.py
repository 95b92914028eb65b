"""The language-model loss over labelled positions only, in chunks, for batches whose labels are
mostly -100: QA and prompt-masked fine-tuning (only the answer tokens train) and masked-LM
pretraining (only the 15% masked tokens do).

A Hugging Face causal LM computes logits at every position, `batch x length x vocab` floats,
then throws away all but the labelled ones in its cross-entropy. Here the model runs with
`logits_to_keep=1` (its head at one position) and hands back its final hidden states; the
output projection then runs only on the labelled positions, `chunk` rows at a time, each chunk
under activation checkpointing so its logits are freed after its loss is summed (backward
recomputes them). The loss equals the model's own (mean over labelled tokens) to float
rounding; pure torch, so CPUs gain too.

A masked LM (BERT's `...ForMaskedLM`) has no `logits_to_keep`: its encoder runs alone and its
prediction head (transform + projection) runs on the masked positions, unshifted.

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


def _base(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a DeepSpeed engine and/or a peft wrapper."""
    module = getattr(model, "module", model)
    return module.get_base_model() if hasattr(module, "get_base_model") else module


def _causal(base: torch.nn.Module) -> bool:
    """A causal LM that can skip its own head: it takes `logits_to_keep` and has an output
    projection."""
    forward = inspect.signature(base.forward).parameters
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    return "logits_to_keep" in forward and head is not None


def masked_lm_parts(base: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """A masked LM's encoder and prediction head, for the layouts whose forward is just
    `head(encoder(...)[0])`: BERT's (`bert`, `cls`), RoFormer's (`roformer`, `cls`) and
    RoBERTa's (`roberta`, `lm_head`)."""
    if not type(base).__name__.endswith("ForMaskedLM"):
        return None
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    head = next((getattr(base, n) for n in ("cls", "lm_head") if hasattr(base, n)), None)
    return (body, head) if body is not None and head is not None else None


def supports_labelled_loss(model: torch.nn.Module) -> bool:
    """Whether `model` (possibly under LoRA) can skip its own head: a causal LM with
    `logits_to_keep`, or a masked LM whose encoder and head raylm knows."""
    base = _base(model)
    return _causal(base) or masked_lm_parts(base) is not None


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor):
    logits = head(hidden).float()  # as transformers' loss upcasts
    return F.cross_entropy(logits, targets, reduction="sum")


def _chunked(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int):
    """Summed cross-entropy of `head(hidden)` against `targets`, `chunk` rows at a time."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), chunk):
        piece = slice(start, start + chunk)
        total = total + checkpoint(
            _chunk_loss, head, hidden[piece], targets[piece], use_reentrant=False
        )
    return total


def labelled_loss(
    model: Any, batch: dict[str, torch.Tensor], chunk: int = CHUNK_ROWS
) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not -100: of the next token for a
    causal LM, of the token itself for a masked LM.

    `model` is the module or the DeepSpeed engine wrapping it. A causal LM is called as a whole
    (so the engine's forward runs); a masked LM's encoder is called alone (the engine's forward
    adds nothing to ZeRO 0-2, whose hooks sit on the parameters), its head found on the module."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    base = _base(model)
    if not _causal(base):
        return _masked_loss(base, inputs, labels, chunk)
    out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1][:, :-1]  # position t predicts label t+1
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    total = _chunked(base.get_output_embeddings(), hidden[keep], targets[keep], chunk)
    # The mean over labelled tokens; a batch with none gives 0 (with a gradient graph).
    return total / max(int(keep.sum()), 1) + 0.0 * out.logits.sum()


def _masked_loss(
    base: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor, chunk: int
) -> torch.Tensor:
    parts = masked_lm_parts(base)
    if parts is None:
        raise ValueError(
            f"{type(base).__name__}: no labelled-only loss (see supports_labelled_loss)"
        )
    body, head = parts
    hidden = body(**inputs)[0]
    keep = labels != IGNORE_INDEX
    total = _chunked(head, hidden[keep], labels[keep], chunk)
    # Every head weight gets a gradient, zero where nothing is masked (ZeRO reduces them all).
    anchor = 0.0 * head(hidden[:1, :1]).sum()
    return total / max(int(keep.sum()), 1) + anchor
