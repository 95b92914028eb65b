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


def test_a_rotary_encoder_builds_for_every_encoder_task_and_its_export_loads_downstream(tmp_path):
    """`model.arch: roformer` builds RoFormer (rotary positions) from the preset; its masked-LM
    export takes a fresh classifier or span head, with the encoder's weights, and LoRA finds
    its attention layers without being told (peft has no default for RoFormer)."""
    import torch

    from raylm.config import LoraConfig

    small = {"preset": "tiny", "num_layers": 1, "hidden_size": 32, "num_heads": 2}
    mlm = build_model(ModelConfig(task="mlm", arch="roformer", **small), vocab_size=300)
    assert type(mlm).__name__ == "RoFormerForMaskedLM"
    assert mlm.config.hidden_size == 32 and mlm.config.max_position_embeddings == 512
    mlm.save_pretrained(str(tmp_path / "m"))
    for task, head in [
        ("classification", "RoFormerForSequenceClassification"),
        ("extractive_qa", "RoFormerForQuestionAnswering"),
    ]:
        fresh = build_model(ModelConfig(task=task, arch="roformer", **small), vocab_size=300)
        assert type(fresh).__name__ == head
        tuned = build_model(ModelConfig(task=task, path=str(tmp_path / "m")), vocab_size=300)
        assert type(tuned).__name__ == head
        word = "roformer.embeddings.word_embeddings.weight"
        assert torch.equal(tuned.state_dict()[word], mlm.state_dict()[word])
    lora = ModelConfig(task="classification", path=str(tmp_path / "m"), lora=LoraConfig())
    adapted = build_model(lora, vocab_size=300)
    adapted_layers = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in
                      adapted.named_parameters() if ".lora_A" in n}  # fmt: skip
    assert adapted_layers == {"query", "value"}


def test_arch_is_for_encoders_built_from_a_preset():
    with pytest.raises(ValueError, match="task causal_lm builds a GPT-2 decoder"):
        ModelConfig(task="causal_lm", arch="roformer")
    with pytest.raises(ValueError, match="ignored with `path`"):
        ModelConfig(task="mlm", path="some/folder", arch="roformer")
    with pytest.raises(ValueError, match="arch"):
        ModelConfig(task="mlm", arch="albert")
    assert type(build_model(ModelConfig(task="mlm"), vocab_size=50)).__name__ == "BertForMaskedLM"
