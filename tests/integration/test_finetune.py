"""Fine-tuning from checkpoints in the layout of bert-base-chinese and gpt2 (saved by
transformers in the test: the path a hub id takes, minus the download) on real Ray + DeepSpeed:
the run trains and exports, and the export loads in plain transformers and predicts the labels
raylm's own evaluation wrote."""

from __future__ import annotations

import json

import pytest
import torch

from pretrained_layouts import save_bert_chinese_layout, save_gpt2_layout  # tests/
from raylm import stages
from raylm.data.synthetic import sentiment_recipe, write_sentiment_corpus
from raylm.recipe import config_from_dict

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("layout", ["bert-base-chinese", "gpt2"])
def test_fine_tuning_a_hub_layout_checkpoint_exports_a_plain_transformers_model(
    layout, tmp_path, ray_session
):
    corpus = write_sentiment_corpus(tmp_path / "corpus.jsonl", n=300, seed=3)
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    save = save_bert_chinese_layout if layout == "bert-base-chinese" else save_gpt2_layout
    folder = save(tmp_path / layout, texts)
    raw = sentiment_recipe(tmp_path, "ft", epochs=1, lr=1e-3, log_every=5, zero_stage=2)
    raw["data"]["tokenizer"] = {"path": str(folder)}
    raw["model"] = {"task": "classification", "path": str(folder)}
    cfg = config_from_dict(raw)
    metrics = stages.run(cfg)
    run_dir = tmp_path / "runs" / "ft"
    assert 0 <= metrics["test"]["accuracy"] <= 1
    # The tokenizer was the checkpoint's, not retrained.
    vocab = json.loads((run_dir / "model" / "tokenizer.json").read_text())["model"]["vocab"]
    theirs = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    assert vocab == theirs

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "model")
    rows = [json.loads(x) for x in (run_dir / "test_predictions.jsonl").read_text().splitlines()]
    assert len(rows) > 10
    n = cfg.data.max_length  # raylm truncates there
    with torch.no_grad():  # one text at a time: no padding question at all
        preds = [
            int(
                model(
                    **tok(r["text"], truncation=True, max_length=n, return_tensors="pt")
                ).logits.argmax(-1)
            )
            for r in rows
        ]
    assert preds == [r["pred"] for r in rows]
