"""The run folder's recorded config: a relaunch that would mix runs is refused, naming fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raylm.recipe import ConfigError, load_config
from raylm.runfolder import record_config

ROOT = Path(__file__).resolve().parents[2]


def _cfg(*overrides):
    return load_config(ROOT / "examples/sentiment_zh.yaml", list(overrides))


def test_first_record_then_compatible_change_is_appended(tmp_path):
    record_config(_cfg(), tmp_path)
    record_config(_cfg(), tmp_path)  # the same config: nothing to record
    assert not (tmp_path / "config_changes.jsonl").exists()
    record_config(_cfg("train.epochs=5", "model.gradient_checkpointing=true"), tmp_path)
    (entry,) = [json.loads(x) for x in (tmp_path / "config_changes.jsonl").read_text().splitlines()]
    assert entry["changes"] == {
        "model.gradient_checkpointing": [False, True],
        "train.epochs": [3, 5],
    }
    assert "epochs: 5" in (tmp_path / "config.yaml").read_text()


def test_a_change_of_data_or_model_is_refused_and_nothing_rewritten(tmp_path):
    record_config(_cfg(), tmp_path)
    before = (tmp_path / "config.yaml").read_bytes()
    with pytest.raises(ConfigError) as err:
        record_config(_cfg("data.tokenizer.vocab_size=4000", "model.num_layers=4"), tmp_path)
    msg = str(err.value)
    assert "data.tokenizer.vocab_size: 6000 recorded, 4000 now" in msg
    assert "model.num_layers: None recorded, 4 now" in msg and "another run.name" in msg
    assert (tmp_path / "config.yaml").read_bytes() == before
    assert not (tmp_path / "config_changes.jsonl").exists()


def test_a_field_added_since_the_record_was_written_is_not_a_change(tmp_path):
    """An upgrade that adds a field (data.mlm was one) must not refuse every earlier run."""
    import yaml

    record_config(_cfg(), tmp_path)
    recorded = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del recorded["data"]["mlm"]  # as a raylm without that section wrote it
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recorded))
    record_config(_cfg(), tmp_path)
    assert not (tmp_path / "config_changes.jsonl").exists()
    with pytest.raises(ConfigError, match="data.max_length: 128 recorded, 64 now"):
        record_config(_cfg("data.max_length=64"), tmp_path)  # a real change is still one
