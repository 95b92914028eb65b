"""LoRA fine-tuning (peft) of a bert-base-chinese-layout checkpoint on real Ray + DeepSpeed
(2 workers, ZeRO-2): only the adapters and the fresh head train, checkpoints hold only them, a
resume continues bit-exactly, the merged export equals base + adapter, and Serve answers from
both export forms over HTTP.

    python -m pytest tests/integration/test_lora.py -q      # about 3 minutes on 2 cores
"""

from __future__ import annotations

import json

import pytest
import torch

from pretrained_layouts import save_bert_chinese_layout  # tests/
from raylm import stages
from raylm.data.synthetic import sentiment_recipe, write_sentiment_corpus
from raylm.recipe import config_from_dict
from raylm.train.checkpoint import checkpoint_root

pytestmark = pytest.mark.integration

LORA = {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}


def _trainable(cfg, num_labels: int = 2) -> dict[str, int]:
    """Names and sizes of the parameters the run's model trains (built here, in-process)."""
    from raylm.tasks import build_model

    model = build_model(cfg.model, 0, num_labels, 0, None, {0: "neg", 1: "pos"})
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


def _logits(model, texts, tok) -> torch.Tensor:
    enc = tok(texts, padding=True, return_tensors="pt")
    enc.pop("token_type_ids", None)
    with torch.no_grad():
        return model.eval()(**enc).logits


def test_lora_trains_only_the_adapter_resumes_exactly_and_exports_merged(tmp_path, ray_session):
    corpus = write_sentiment_corpus(tmp_path / "corpus.jsonl", n=300, seed=3)
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    base = save_bert_chinese_layout(tmp_path / "bert", texts)
    train = {"num_workers": 2, "zero_stage": 2, "lr": 1e-2, "log_every": 1, "eval_every": 10}
    raw = sentiment_recipe(tmp_path, "lora", epochs=3, max_steps=20, shuffle_buffer=0, **train)
    raw["data"]["tokenizer"] = {"path": str(base)}
    raw["model"] = {"task": "classification", "path": str(base), "lora": LORA}
    cfg = config_from_dict(raw)
    stages.preprocess(cfg)
    first = stages.train(cfg)

    # Only the adapters (query, value of 2 layers) and the layers the checkpoint lacked (the
    # classifier, the pooler) train: 2 layers x 2 targets x r x (32 in + 32 out) = 1,024
    # adapter weights, plus the classifier (32 x 2 + 2) and the pooler (32 x 32 + 32).
    trainable = _trainable(cfg)
    assert sum(v for n, v in trainable.items() if "lora_" in n) == 2 * 2 * 4 * (32 + 32)
    assert sum(trainable.values()) == 1024 + 66 + 1056, trainable

    root = checkpoint_root(tmp_path / "runs" / "lora")
    latest = root / "checkpoint_step0000020"
    # The DeepSpeed checkpoint holds the trained parameters and nothing frozen (our own file,
    # just written: trusted, hence weights_only=False for DeepSpeed's metadata).
    (states,) = (latest / "ds").rglob("mp_rank_00_model_states.pt")
    module = torch.load(states, map_location="cpu", weights_only=False)["module"]
    assert {k: v.numel() for k, v in module.items()} == trainable
    # Its Hugging Face folder is the adapter alone (with the fresh head), not the base's weights.
    hf = sorted(p.name for p in (latest / "hf").iterdir())
    assert hf == ["README.md", "adapter_config.json", "adapter_model.safetensors", "raylm.json"]

    # Resume: the latest checkpoint is damaged, so the run goes back to the previous complete
    # one (step 16, an epoch's end, or 10) and redoes the steps after it; every loss equals the
    # first run's exactly. (This caught a fine-tune that trained in eval mode, without dropout,
    # until its first validation: `from_pretrained` returns the model in eval mode.)
    (shard,) = (latest / "ds").rglob("*rank_1*optim_states.pt")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    resumed = stages.train(cfg)
    losses = {r["step"]: r["train_loss"] for r in first["history"] if "train_loss" in r}
    redone = {r["step"]: r["train_loss"] for r in resumed["history"] if "train_loss" in r}
    assert redone == losses and set(redone) == set(range(1, 21))

    # The merged export is a plain model equal to base + adapter.
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raylm.models.export import export_model, load_model

    merged_dir = stages.export(cfg)
    assert not (merged_dir / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(merged_dir)
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    plain = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    )
    best = json.loads((tmp_path / "runs" / "lora" / "train_result.json").read_text())
    with_adapter = PeftModel.from_pretrained(plain, f"{best['best_checkpoint']}/hf")
    sample = texts[:8]
    want = _logits(merged, sample, tok)
    assert torch.allclose(want, _logits(with_adapter, sample, tok), atol=1e-5)
    # The unmerged export (model.lora.merge: false) loads onto its base to the same model.
    adapter_dir = export_model(
        best["best_checkpoint"], tmp_path / "data" / "tokenizer", tmp_path / "adapter", merge=False
    )
    assert (adapter_dir / "adapter_config.json").is_file()
    unmerged = load_model(adapter_dir, "AutoModelForSequenceClassification")
    assert torch.allclose(_logits(unmerged, sample, tok), want, atol=1e-5)

    _serve_answers_from_both(merged_dir, adapter_dir, sample, want)


def _serve_answers_from_both(merged_dir, adapter_dir, texts, logits) -> None:
    import httpx
    from ray import serve

    from raylm.serve.launch import deploy
    from serve_models import free_port  # tests/serve_models.py

    url = deploy(
        {"merged": str(merged_dir), "adapter": str(adapter_dir)},
        {"port": free_port(), "num_cpus": 0.25},
    )
    try:
        want = logits.softmax(-1)
        for name in ("merged", "adapter"):
            resp = httpx.post(
                f"{url}/v1/classify", json={"model": name, "texts": texts}, timeout=60
            )
            assert resp.status_code == 200, resp.text
            got = [[r["probabilities"][k] for k in ("neg", "pos")] for r in resp.json()["results"]]
            assert torch.allclose(torch.tensor(got), want, atol=1e-5), name
    finally:
        serve.shutdown()
