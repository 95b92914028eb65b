"""The loss over labelled positions only (raylm.train.lm_loss) equals the model's own: causal
LMs (next token, prompt-masked rows) and masked LMs (the masked tokens themselves)."""

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
    RobertaConfig,
    RobertaForMaskedLM,
    RoFormerConfig,
    RoFormerForMaskedLM,
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


def _rows(seed: int, low: int = 0) -> tuple[torch.Generator, torch.Tensor, torch.Tensor]:
    """3 rows of 24 random ids (from `low` up), the second padded from position 18; the
    generator goes on drawing for the caller."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, VOCAB, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 18:] = 0
    return g, ids, mask


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Prompt-masked rows, as the QA recipe's: labels only on a short answer, then padding."""
    _, ids, mask = _rows(seed)
    labels = torch.full_like(ids, -100)
    labels[0, 15:20], labels[1, 10:18], labels[2, 20:24] = ids[0, 15:20], ids[1, 10:18], ids[2, 20:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _bert():
    conf = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        vocab_size=VOCAB,
    )  # fmt: skip
    return BertForMaskedLM(conf)


def _roberta():
    conf = RobertaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        vocab_size=VOCAB, max_position_embeddings=40, pad_token_id=1,
    )  # fmt: skip
    return RobertaForMaskedLM(conf)


def _roformer():
    conf = RoFormerConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        vocab_size=VOCAB, max_position_embeddings=40,
    )  # fmt: skip
    return RoFormerForMaskedLM(conf)


def _masked_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Masked-LM rows, as raylm's collate_mlm makes: a few positions labelled, a padded row."""
    g, ids, mask = _rows(seed, low=2)
    chosen = torch.rand(ids.shape, generator=g) < 0.2
    chosen &= mask.bool()
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    ids = torch.where(chosen, torch.full_like(ids, 3), ids)  # "[MASK]"
    types = torch.zeros_like(ids)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}


CASES = [
    (_gpt2, _batch), (_llama, _batch),
    (_bert, _masked_batch), (_roberta, _masked_batch), (_roformer, _masked_batch),
]  # fmt: skip
IDS = ["gpt2", "llama", "bert", "roberta", "roformer"]


@pytest.mark.parametrize("build,rows", CASES, ids=IDS)
def test_loss_and_gradients_equal_the_models_own(build, rows):
    torch.manual_seed(0)
    model = build().eval()  # no dropout: the two passes must see the same network
    batch = rows()
    assert int((batch["labels"] != -100).sum()) > 8  # several chunks of 4
    want = model(**batch).loss
    want.backward()
    # (RoFormer's sinusoidal position table is a frozen parameter: no gradient either way)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    want_grads = {n: p.grad.clone() for n, p in trained.items()}
    model.zero_grad()
    got = labelled_loss(model, batch, chunk=4)  # several chunks, the last short
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    for name, p in trained.items():
        torch.testing.assert_close(p.grad, want_grads[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("build,rows", CASES[::2], ids=IDS[::2])
def test_a_batch_without_labels_gives_zero_and_every_weight_a_gradient(build, rows):
    model = build()
    batch = rows()
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss = labelled_loss(model, batch)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_language_models_with_a_known_head_qualify_classifiers_do_not():
    assert all(supports_labelled_loss(build()) for build, _ in CASES)
    bert = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, vocab_size=VOCAB)  # fmt: skip
    assert not supports_labelled_loss(BertForSequenceClassification(bert))
    with pytest.raises(ValueError, match="BertForSequenceClassification: no labelled-only loss"):
        labelled_loss(BertForSequenceClassification(bert), _masked_batch())
