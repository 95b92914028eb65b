"""The loss over labelled positions only (raylm.train.lm_loss) equals the model's own."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from raylm.train.lm_loss import labelled_loss, supports_labelled_loss

VOCAB = 97


def _gpt2():
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB))


def _llama():
    conf = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=VOCAB,
    )  # fmt: skip
    return LlamaForCausalLM(conf)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Prompt-masked rows, as the QA recipe's: labels only on a short answer, then padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 18:] = 0  # a padded row
    labels = torch.full_like(ids, -100)
    labels[0, 15:20], labels[1, 10:18], labels[2, 20:24] = ids[0, 15:20], ids[1, 10:18], ids[2, 20:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_loss_and_gradients_equal_the_models_own(build):
    torch.manual_seed(0)
    model = build().eval()  # no dropout: the two passes must see the same network
    batch = _batch()
    want = model(**batch).loss
    want.backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    got = labelled_loss(model, batch, chunk=4)  # 17 labelled positions: 5 chunks, the last short
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_batch_without_labels_gives_zero_and_a_backward_that_runs():
    model = _gpt2()
    batch = _batch()
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss = labelled_loss(model, batch)
    loss.backward()
    assert loss.item() == 0.0


def test_only_causal_lms_with_a_head_qualify():
    assert supports_labelled_loss(_gpt2()) and supports_labelled_loss(_llama())
    bert = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, vocab_size=VOCAB)  # fmt: skip
    assert not supports_labelled_loss(BertForSequenceClassification(bert))
    assert not supports_labelled_loss(BertForMaskedLM(bert))
