"""The baseline a masked LM has to beat: a unigram model of the training split's tokens.

It always guesses the most frequent training token and prices each token at its training
frequency (add-one smoothed). An encoder that has learned nothing from context scores exactly
this where the input hides the token ([MASK] or a random token): its masked-token accuracy can
still look respectable, because 10% of the masked tokens are left in place and can be copied.

    counts = train_ds.map_batches(count_tokens(vocab_size), ...)   # one row of counts per batch
    logp = unigram_logprobs(summed_counts)
    unigram_sums(inputs, labels, logp)   # {"nll", "hits", "hidden_hits"} of one masked batch
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from raylm.data.collate import IGNORE_INDEX
from raylm.data.mlm import NOT_A_WORD

__all__ = ["count_tokens", "unigram_logprobs", "unigram_sums"]


def count_tokens(vocab_size: int) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
    """A `map_batches` function: one row, the counts of the maskable tokens of a batch of
    masked-LM blocks (`input_ids`, `words`; [CLS]/[SEP] are never masked, so not counted)."""

    def count(batch: dict[str, Any]) -> dict[str, np.ndarray]:
        total = np.zeros(vocab_size, dtype=np.int64)
        for ids, words in zip(batch["input_ids"], batch["words"], strict=True):
            ids, words = np.asarray(ids, np.int64), np.asarray(words)
            total += np.bincount(ids[words != NOT_A_WORD], minlength=vocab_size)[:vocab_size]
        return {"counts": total[None, :]}

    return count


def unigram_logprobs(counts: np.ndarray) -> np.ndarray:
    """Log-probabilities of each token id from its training count, add-one smoothed."""
    counts = np.asarray(counts, dtype=np.float64) + 1.0
    return np.log(counts / counts.sum())


def unigram_sums(inputs: np.ndarray, labels: np.ndarray, logp: np.ndarray) -> dict[str, float]:
    """The unigram model's summed NLL, hits (always the most frequent token) and hits where the
    input hides the token, over the scored positions of one masked batch."""
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    scored = labels != IGNORE_INDEX
    hidden = scored & (inputs != labels)
    top = int(np.argmax(logp))
    return {
        "nll": float(-logp[labels[scored]].sum()),
        "hits": float((labels[scored] == top).sum()),
        "hidden_hits": float((labels[hidden] == top).sum()),
    }
