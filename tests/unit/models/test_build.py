"""Model builders: presets, overrides, parameter counts."""

import pytest

from raylm.config import ModelConfig
from raylm.models.build import count_parameters, resolved_preset
from raylm.tasks import build_model


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


@pytest.mark.parametrize("task", ["causal_lm", "classification"])
def test_pretrained_path_counts_on_meta_without_loading(tmp_path, task):
    """Training from `model.path` counts FLOPs on the meta device, where from_pretrained fails."""
    import torch

    from raylm.recipe import config_from_dict
    from raylm.train.driver import _flops_per_token

    lm = task == "causal_lm"
    small = ModelConfig(task=task, preset="tiny", num_layers=1, hidden_size=32, num_heads=2)
    saved = build_model(small, vocab_size=300, pad_token_id=0, eos_token_id=1)
    saved.save_pretrained(str(tmp_path / "m"))
    cfg = config_from_dict(
        {
            "data": {"source": "jsonl", "paths": ["x.jsonl"], "max_length": 64}
            | ({"label_column": None, "tokenizer": {"kind": "bytelevel_bpe"}} if lm else {}),
            "model": {"task": task, "path": str(tmp_path / "m")},
        }
    )
    n = count_parameters(saved, exclude_embeddings=True)
    assert _flops_per_token(cfg, 300, 2, 0) == pytest.approx(_flops_per_token_of(n, 1, 32, 64))
    assert torch.get_default_device().type == "cpu"


def _flops_per_token_of(n: int, layers: int, hidden: int, seq: int) -> float:
    from raylm.train.flops import flops_per_token

    return flops_per_token(n, layers, hidden, seq)
