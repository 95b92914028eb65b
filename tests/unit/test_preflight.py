"""Preflight: storage that cannot be written and a model or tokenizer that cannot be loaded fail
in one line naming the field, before a stage writes anything or starts Ray."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from raylm.config import RunConfig, TokenizerConfig
from raylm.configkit import ConfigError
from raylm.preflight import check_pretrained, check_storage
from raylm.recipe import load_config

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "sentiment_zh.yaml"


def _cfg(tmp_path: Path, *overrides: str):
    return load_config(RECIPE, [f"run.output_dir={tmp_path}", *overrides])


def test_a_writable_output_dir_passes_and_nothing_is_left_behind(tmp_path):
    check_storage(RunConfig(output_dir=str(tmp_path / "not" / "yet")))
    assert list(tmp_path.iterdir()) == []  # neither the folders nor the probe file


def test_an_output_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"run.output_dir: .*/f/runs cannot be a folder: .*/f is"):
        check_storage(RunConfig(output_dir=str(tmp_path / "f" / "runs")))


def test_a_read_only_output_dir_is_refused():
    try:  # /sys is read-only even for root; skip where it is not
        tempfile.TemporaryFile(dir="/sys").close()
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    with pytest.raises(ConfigError, match=r"run.output_dir: /sys/raylm is not writable"):
        check_storage(RunConfig(output_dir="/sys/raylm"))


def test_a_local_storage_path_is_checked_too(tmp_path):
    (tmp_path / "f").write_text("x")
    run = RunConfig(output_dir=str(tmp_path), storage_path=str(tmp_path / "f" / "ray"))
    with pytest.raises(ConfigError, match="run.storage_path"):
        check_storage(run)
    check_storage(RunConfig(output_dir=str(tmp_path), storage_path="s3://bucket/runs"))


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("bert")
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """A tokenizer that fits bert_folder's 50 embeddings, and one with 120 tokens."""
    from raylm.data.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizers")
    texts = [f"好书{i}坏书{i % 7}第{i}页" for i in range(200)]
    small = train_tokenizer(texts[:3], TokenizerConfig(vocab_size=100, min_frequency=1), out / "s")
    big = train_tokenizer(texts, TokenizerConfig(vocab_size=120, min_frequency=1), out / "b")
    assert len(small) <= 50 < len(big)
    return out / "s", out / "b"


def test_a_model_folder_with_config_weights_and_its_tokenizer_passes(
    tmp_path, bert_folder, tokenizers
):
    check_pretrained(
        _cfg(tmp_path, f"model.path={bert_folder}", f"data.tokenizer.path={tokenizers[0]}")
    )


def test_a_pretrained_model_needs_a_pretrained_tokenizer(tmp_path, bert_folder):
    with pytest.raises(ConfigError, match="^data.tokenizer.path: not set, while model.path is"):
        check_pretrained(_cfg(tmp_path, f"model.path={bert_folder}"))


def test_a_tokenizer_larger_than_the_embeddings_is_refused(tmp_path, bert_folder, tokenizers):
    cfg = _cfg(tmp_path, f"model.path={bert_folder}", f"data.tokenizer.path={tokenizers[1]}")
    with pytest.raises(ConfigError, match=r"has 1\d\d tokens, but model.path .* embeddings for 50"):
        check_pretrained(cfg)


def test_a_model_path_that_is_not_there_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^model.path: /nonexistent/bert is not a folder$"):
        check_pretrained(_cfg(tmp_path, "model.path=/nonexistent/bert"))


def test_a_model_folder_without_config_or_weights_is_refused(tmp_path, bert_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        check_pretrained(_cfg(tmp_path, f"model.path={empty}"))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_bytes((bert_folder / "config.json").read_bytes())
    with pytest.raises(ConfigError, match="holds no weights .looked for model.safetensors"):
        check_pretrained(_cfg(tmp_path, f"model.path={no_weights}"))


def test_a_broken_config_json_is_refused_naming_the_field(tmp_path, bert_folder):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes((bert_folder / "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="^model.path: .*config.json is not readable JSON"):
        check_pretrained(_cfg(tmp_path, f"model.path={broken}"))
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ConfigError, match="^model.path: .* cannot be loaded here: "):
        check_pretrained(_cfg(tmp_path, f"model.path={broken}"))


def test_a_model_id_that_cannot_be_resolved_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub here; an id not in the cache
    with pytest.raises(ConfigError, match="^model.path: 'nobody/no-such-model' cannot be loaded"):
        check_pretrained(_cfg(tmp_path, "model.path=nobody/no-such-model"))


def test_a_tokenizer_path_must_load_as_a_tokenizer(tmp_path):
    from raylm.data.tokenizer import train_tokenizer

    good = tmp_path / "tok"
    train_tokenizer(
        ["好书 第一页", "坏书 第二页"] * 10, TokenizerConfig(vocab_size=100, min_frequency=1), good
    )
    check_pretrained(_cfg(tmp_path, f"data.tokenizer.path={good}"))
    bad = tmp_path / "not_a_tokenizer"
    bad.mkdir()
    (bad / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="^data.tokenizer.path: .* cannot be loaded as a"):
        check_pretrained(_cfg(tmp_path, f"data.tokenizer.path={bad}"))
    with pytest.raises(ConfigError, match="^data.tokenizer.path: .*/missing is not a folder$"):
        check_pretrained(_cfg(tmp_path, f"data.tokenizer.path={tmp_path}/missing"))


def test_the_cli_refuses_an_unloadable_model_before_writing_the_run_folder(tmp_path, monkeypatch):
    """Before this check, `raylm run` preprocessed for a minute, then ended in a traceback."""
    from typer.testing import CliRunner

    from raylm.cli import app

    monkeypatch.chdir(ROOT)
    args = ["run", str(RECIPE), "--output", str(tmp_path), "--set", "model.path=/nonexistent/m"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: model.path: /nonexistent/m is not a folder"
    )
    assert not (tmp_path / "sentiment_zh").exists()
    assert not os.listdir(tmp_path)
