"""Security defaults, in one place: what a model folder or checkpoint cannot make raylm run, and
what listens where unless told otherwise. Other files hold the rest of the promise (each named
below, so this list is the whole of it):

- Serve bearer auth on every route but the probes: tests/unit/serve/test_serve_api.py
  (test_auth_guards_all_but_probes) and over real HTTP tests/integration/test_serve.py
  (test_body_limit_and_auth);
- `raylm serve`'s default layout (direct ingress) and the HAProxy one answer on 127.0.0.1 only,
  with auth: tests/integration/test_serve.py (test_raylm_serve_cli_layouts_on_loopback_with_auth;
  HAProxy's own stats and metrics ports listen on every interface, so it is not the default);
- the embedded Ray's dashboard on 127.0.0.1: tests/unit/test_cli.py
  (test_workers_that_cannot_fit_an_embedded_ray_fail_in_one_line reads its URL);
- a checkpoint shard swapped for a pickle (same size or not) is refused by its manifest, and with
  RAYLM_CHECKPOINT_KEY a rewritten manifest too: tests/unit/train/test_manifest.py;
- Ray token auth on every `ray start` of cluster.yaml: tests/unit/ops/test_cluster_yaml.py.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from raylm.config import ModelConfig, TokenizerConfig
from raylm.configkit import ConfigError
from raylm.data.tokenizer import train_tokenizer
from raylm.serve.schemas import ServeConfig


class _Payload:
    """Unpickling this runs a shell command (what a hostile pytorch_model.bin would hold)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def hostile_folder(tmp_path):
    """A classifier folder whose only weights are a pickle that runs code when unpickled."""
    from transformers import BertConfig

    folder, marker = tmp_path / "model", tmp_path / "pwned"
    folder.mkdir()
    BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16,
    ).save_pretrained(folder)  # fmt: skip
    train_tokenizer(["好书 第一页"] * 5, TokenizerConfig(vocab_size=100, min_frequency=1), folder)
    torch.save(
        {"bert.embeddings.word_embeddings.weight": _Payload(marker)}, folder / "pytorch_model.bin"
    )
    return folder, marker


def test_the_payload_really_runs_code_when_unpickled(hostile_folder):
    """The check below means something only if this file is hostile."""
    folder, marker = hostile_folder
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


def test_a_pickled_model_file_is_never_unpickled_by_the_model_builder(hostile_folder):
    from raylm.models.build import sequence_classifier

    folder, marker = hostile_folder
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        sequence_classifier(ModelConfig(path=str(folder)), vocab_size=30)
    assert not marker.exists()


def test_a_pickled_model_file_is_never_unpickled_by_evaluation_or_serve(hostile_folder):
    from raylm.eval.predict import ClassifierPredictor

    folder, marker = hostile_folder
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        ClassifierPredictor(str(folder), max_length=16)
    assert not marker.exists()


def test_a_model_folder_with_its_own_code_does_not_run_it(tmp_path):
    """`auto_map` in config.json names Python in the folder; raylm never passes
    trust_remote_code, so transformers refuses instead of importing it."""
    from transformers import AutoConfig

    from raylm.preflight import check_pretrained
    from raylm.recipe import load_config

    folder, marker = tmp_path / "model", tmp_path / "pwned"
    folder.mkdir()
    (folder / "configuration_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    (folder / "config.json").write_text(
        json.dumps(
            {"model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}
        )
    )
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoConfig.from_pretrained(folder)
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "examples" / "sentiment_zh.yaml", [f"model.path={folder}"])
    with pytest.raises(ConfigError, match="^model.path: .* needs Python code of its own .auto_map"):
        check_pretrained(cfg)
    assert not marker.exists()


def test_services_listen_on_loopback_unless_told_otherwise():
    from raylm.runtime import DASHBOARD_HOST

    assert ServeConfig().host == "127.0.0.1"
    assert DASHBOARD_HOST == "127.0.0.1"
