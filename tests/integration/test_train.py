"""Real Ray Train + real DeepSpeed (CPU accelerator, gloo) on a small labelled corpus.

Covers: a 2-worker ZeRO-2 run whose loss falls and whose parameters change; ZeRO 0, 1 and 3 each
training a few steps. A run relaunched under the same name continuing from its latest checkpoint
with its optimizer state (its next losses equal an uninterrupted run's) is proved by
tests/chaos/test_nothing_lost.py (a killed worker; a killed driver, relaunched).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from raylm import stages
from raylm.data.synthetic import sentiment_recipe, write_sentiment_corpus
from raylm.recipe import config_from_dict

pytestmark = pytest.mark.integration


def _corpus(path: Path, n: int = 600, seed: int = 0) -> Path:
    return write_sentiment_corpus(path, n=n, seed=seed)


def _cfg(tmp: Path, name: str, **train) -> dict:
    base = {"epochs": 2, "lr": 2e-3, "log_every": 1, "zero_stage": 2, "shuffle_buffer": 64}
    return sentiment_recipe(tmp, name, **{**base, **train})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("train")
    _corpus(tmp / "corpus.jsonl")
    stats = stages.preprocess(config_from_dict(_cfg(tmp, "prep")))
    assert stats["splits"]["train"] > 300
    return tmp


def _train(tmp: Path, name: str, **train) -> dict:
    return stages.train(config_from_dict(_cfg(tmp, name, **train)))


def _losses(history: list[dict]) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in history if "train_loss" in r}


def test_two_workers_zero3_loss_falls_and_params_change(prepared):
    # ZeRO-3: its parameters are partitioned, so this is also the export and evaluation of a
    # model gathered from shards (ZeRO-2 on two workers trains in the chaos and LoRA tests).
    cfg = config_from_dict(
        _cfg(prepared, "zero3x2", num_workers=2, epochs=4, lr=5e-3, zero_stage=3)
    )
    summary = stages.train(cfg)
    losses = list(_losses(summary["history"]).values())
    assert len(losses) >= 10
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    # Two workers pull shards dynamically, so runs differ a little; these bounds leave room.
    assert last < 0.9 * first, (first, last)
    assert summary["best_metrics"]["val_accuracy"] > 0.65  # chance is 0.5

    # Same seed, same builder -> the initial weights; the trained ones must differ.
    from raylm.tasks import build_model

    torch.manual_seed(cfg.train.seed)
    trained = load_file(str(Path(summary["best_checkpoint"]) / "hf" / "model.safetensors"))
    init = build_model(
        cfg.model,
        vocab_size=trained["bert.embeddings.word_embeddings.weight"].shape[0],
        num_labels=2,
    ).state_dict()
    changed = [k for k, v in trained.items() if k in init and not torch.allclose(v, init[k])]
    assert len(changed) > 0.8 * len(trained)

    # The exported model, loaded with plain transformers one text at a time (no padding), agrees
    # with the platform's batched Ray Data evaluation on every test text.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    stages.export(cfg)
    metrics = stages.evaluate(cfg)
    run_dir = stages.run_dir_of(cfg)
    rows = [json.loads(ln) for ln in (run_dir / "test_predictions.jsonl").open(encoding="utf-8")]
    assert len(rows) >= 40 and metrics["test"]["accuracy"] > 0.65
    tok = AutoTokenizer.from_pretrained(run_dir / "model")
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    with torch.no_grad():
        for row in rows[:100]:
            enc = tok(row["text"], truncation=True, max_length=32, return_tensors="pt")
            probs = model(**enc).logits.softmax(-1)[0]
            assert int(probs.argmax()) == row["pred"], row
            assert float(probs.max()) == pytest.approx(row["prob"], abs=1e-4), row
    _predict_agrees_with_evaluate(run_dir, cfg.run.data_path / "test", rows)


def _predict_agrees_with_evaluate(run_dir: Path, test_dir: Path, evaluated: list[dict]) -> None:
    """`raylm predict` over the test split (cleaned again, as any input is) gives evaluate's
    labels; a file with bad lines gives each a counted reject, and the good ones predictions."""
    import pyarrow.parquet as pq

    from raylm.predict import predict_files

    out = run_dir.parent / "predicted"
    summary = predict_files(str(run_dir), [str(test_dir)], out, concurrency=1)
    got = {r["text"]: r for r in pq.read_table(out / "predictions").to_pylist()}
    assert summary["predicted"] == len(got) == len(evaluated) and summary["rejected"] == {}
    for row in evaluated:
        assert got[row["text"]]["label_id"] == row["pred"], row
        assert got[row["text"]]["label"] == ("neg", "pos")[row["pred"]]
        assert got[row["text"]]["score"] == pytest.approx(row["prob"], abs=1e-5), row

    bad = run_dir.parent / "bad.jsonl"
    bad.write_bytes(b'{"text": "\xe4\xb9\xa6\xe5\xbe\x88\xe5\xa5\xbd"}\nnot json\n'
                    b'{"other": 1}\n\xff\xfe\n{"text": "x"}\n{"text": "bad bad"}\n')  # fmt: skip
    summary = predict_files(str(run_dir / "model"), [str(bad)], out, concurrency=1)
    assert summary["rejected"] == {
        "invalid_json": 1, "invalid_utf8": 1, "missing_text": 1, "too_short": 1
    }  # fmt: skip
    assert summary["predicted"] == 2 and summary["rows"] == 6
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [2, 3, 4, 5]
    assert len(pq.read_table(out / "predictions")) == 2  # the earlier prediction was replaced


# ZeRO-1 also streams its data from the files (tokenizing every epoch) instead of caching it.
# Variants (make test-variants): ZeRO-0 also trains in test_model_parallel.py (the
# tensor-parallel layout, 2 workers); ZeRO-1 in its one-worker reference, and a streamed split
# on 2 workers in tests/chaos/test_nothing_lost.py (killed worker, ZeRO-2); ZeRO-3 on 2
# workers in test_two_workers_zero3_loss_falls_and_params_change.
ZERO0 = pytest.param(0, 1, None, marks=pytest.mark.variant)
ZERO1 = pytest.param(1, 2, False, marks=pytest.mark.variant)
ZERO3 = pytest.param(3, 2, None, marks=pytest.mark.variant)


@pytest.mark.parametrize("stage, workers, cache", [ZERO0, ZERO1, ZERO3])
def test_zero_stages_train(prepared, stage, workers, cache):
    summary = _train(
        prepared,
        f"zero{stage}",
        zero_stage=stage,
        num_workers=workers,
        max_steps=6,
        cache_data=cache,
    )
    losses = _losses(summary["history"])
    assert max(losses) == 6 and all(v == v for v in losses.values())  # ran 6 steps, no NaN
    assert (Path(summary["best_checkpoint"]) / "hf" / "model.safetensors").is_file()
