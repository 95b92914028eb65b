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
