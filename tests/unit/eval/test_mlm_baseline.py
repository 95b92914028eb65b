"""The masked LM's unigram baseline and the accuracy where the input hides the token."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from raylm.data.collate import IGNORE_INDEX as X
from raylm.eval.evaluators import MaskedLMEvaluator
from raylm.eval.mlm_baseline import count_tokens, unigram_logprobs, unigram_sums

MASK = 9


def test_counts_leave_out_cls_and_sep_and_add_up_over_blocks():
    batch = {  # [CLS]=1 and [SEP]=2 have word -1: never masked, never counted
        "input_ids": [np.array([1, 5, 5, 6, 2]), np.array([1, 6, 2])],
        "words": [np.array([-1, 0, 1, 2, -1]), np.array([-1, 0, -1])],
    }
    counts = count_tokens(8)(batch)["counts"]
    assert counts.shape == (1, 8)
    assert counts[0].tolist() == [0, 0, 0, 0, 0, 2, 2, 0]


def test_unigram_logprobs_are_add_one_smoothed_probabilities():
    logp = unigram_logprobs(np.array([0, 3, 1]))
    assert np.exp(logp).sum() == pytest.approx(1.0)
    assert np.exp(logp).tolist() == pytest.approx([1 / 7, 4 / 7, 2 / 7])


def test_unigram_sums_guess_the_commonest_token_everywhere():
    logp = np.log(np.array([0.1, 0.6, 0.3]))  # token 1 is the commonest
    labels = np.array([[X, 1, 2, 1, X]])
    inputs = np.array([[0, MASK, MASK, 1, 2]])  # position 3 kept (copyable), 1-2 hidden
    sums = unigram_sums(inputs, labels, logp)
    assert sums["hits"] == 2  # positions 1 and 3
    assert sums["hidden_hits"] == 1  # position 1 only
    assert sums["nll"] == pytest.approx(-(2 * np.log(0.6) + np.log(0.3)))


def test_the_evaluator_scores_hidden_positions_apart_from_kept_ones():
    # A model that copies its input and knows nothing else: right where the token was kept,
    # wrong where it was hidden.
    labels = torch.tensor([[X, 4, 5, 6, X]])
    inputs = torch.tensor([[1, MASK, 5, 3, 2]])  # 4 masked, 5 kept, 6 swapped for 3
    logits = torch.nn.functional.one_hot(inputs, 10).float()
    ev = MaskedLMEvaluator()
    ev.update(
        SimpleNamespace(loss=torch.tensor(2.0), logits=logits),
        {"input_ids": inputs, "labels": labels},
    )
    m = ev.metrics()
    assert m["val_masked_accuracy"] == pytest.approx(1 / 3)
    assert m["val_hidden_accuracy"] == 0.0
    assert m["val_loss"] == pytest.approx(2.0)
