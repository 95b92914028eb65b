"""Model builders: presets, overrides, parameter counts."""

import pytest

from raylm.config import ModelConfig
from raylm.models.build import build_model, count_parameters, resolved_preset


def test_classifier_from_tiny_preset():
    model = build_model(
        ModelConfig(task="classification", preset="tiny"),
        vocab_size=500,
        num_labels=3,
        id2label={0: "a", 1: "b", 2: "c"},
    )
    assert model.config.num_labels == 3 and model.config.hidden_size == 128
    assert model.config.id2label[2] == "c"
    assert count_parameters(model, exclude_embeddings=True) < count_parameters(model)


def test_overrides_apply_and_causal_lm():
    cfg = ModelConfig(task="causal_lm", preset="tiny", num_layers=3, hidden_size=64, num_heads=4)
    assert resolved_preset(cfg).layers == 3
    model = build_model(cfg, vocab_size=300, pad_token_id=0, eos_token_id=1)
    assert model.config.n_layer == 3 and model.config.n_embd == 64 and model.config.n_head == 4


def test_indivisible_heads_rejected():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(hidden_size=100, num_heads=3)
