"""Config loading: every shipped YAML validates; bad values fail naming the file and the field."""

import re
from pathlib import Path

import pytest

from raylm.config import ConfigError, dump_config
from raylm.recipe import apply_overrides, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_loads(path):
    cfg = load_config(path)
    assert cfg.run.name


def test_examples_exist():
    assert any(p.name == "sentiment_zh.yaml" for p in EXAMPLES)


def test_override_types_and_roundtrip(tmp_path):
    cfg = load_config(
        ROOT / "examples/sentiment_zh.yaml",
        ["train.lr=3e-4", "train.zero_stage=3", "model.num_layers=4", "run.baseline=false"],
    )
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.zero_stage == 3 and cfg.model.num_layers == 4 and cfg.run.baseline is False
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.lr=-1", "train.lr"),
        ("train.zero_stage=5", "train.zero_stage"),
        ("train.leraning_rate=0.1", "train.leraning_rate"),
        ("data.split.test=0.95", "data.split"),
        ("model.preset=huge", "model.preset"),
        ("train.batch_size=abc", "train.batch_size"),
    ],
)
def test_bad_value_names_file_and_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "examples/sentiment_zh.yaml", [override])
    msg = str(err.value)
    assert "sentiment_zh.yaml" in msg and field in msg


def test_cross_field_checks(tmp_path):
    with pytest.raises(ConfigError, match="offload_params needs zero_stage 3"):
        load_config(ROOT / "examples/sentiment_zh.yaml", ["train.offload_params=true"])
    with pytest.raises(ConfigError, match="needs at least one entry in `paths`"):
        load_config(ROOT / "examples/sentiment_zh.yaml", ["data.source=jsonl"])
    with pytest.raises(ConfigError, match="resources_per_worker: 'GPU' is set by"):
        load_config(ROOT / "examples/sentiment_zh.yaml", ["train.resources_per_worker={GPU: 1}"])
    with pytest.raises(ConfigError, match="train.placement_strategy"):
        load_config(ROOT / "examples/sentiment_zh.yaml", ["train.placement_strategy=ANYWHERE"])
    cfg = load_config(
        ROOT / "examples/sentiment_zh.yaml",
        ["train.resources_per_worker={accelerator_type:H100: 0.001}"],
    )
    assert cfg.train.resources_per_worker == {"accelerator_type:H100": 0.001}


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({"train": 3}, ["train.lr=1"])


def test_local_model_and_tokenizer_paths_become_absolute(tmp_path, monkeypatch):
    # Train workers run elsewhere: a relative folder would be read as a model-hub id there.
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    raw = {"data": {"source": "jsonl", "paths": ["x"], "tokenizer": {"path": "m"}}}
    cfg = config_from_dict({**raw, "model": {"path": "m"}})
    assert cfg.model.path == cfg.data.tokenizer.path == str(tmp_path / "m")
    assert config_from_dict({**raw, "model": {"path": "org/model"}}).model.path == "org/model"


@pytest.mark.parametrize("name", [".", ".."])
def test_run_names_that_leave_output_dir_are_refused(name):
    with pytest.raises(ConfigError, match=rf"run.name: .*'{re.escape(name)}' is not a run name"):
        load_config(ROOT / "examples/sentiment_zh.yaml", [f"run.name={name}"])


@pytest.mark.parametrize(
    "override", ["train.lr=.inf", "train.lr=.nan", "serve.request_timeout_s=.inf"]
)
def test_non_finite_numbers_are_refused(override):
    field = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{re.escape(field)}: Input should be a finite number"):
        load_config(ROOT / "examples/serve.yaml", [override])


def test_non_finite_numbers_in_the_free_form_tune_space_are_refused():
    """Found by tests/unit/test_properties.py: `.inf` in a space passed, then dumped as null."""
    with pytest.raises(ConfigError, match=r"tune.space: .*train.lr.loguniform: \[0.0001, inf\]"):
        load_config(
            ROOT / "examples/tune_sentiment.yaml",
            ["tune.space={train.lr: {loguniform: [1.0e-4, .inf]}}"],
        )
