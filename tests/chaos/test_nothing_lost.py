"""Nothing lost: real runs (Ray Train + DeepSpeed ZeRO-2 on gloo) under the faults users meet.

    python -m pytest tests/chaos -q        # about 3 minutes on 2 cores

Each test breaks something a real run depends on and checks that the run recovers, or stops
with an error naming the cause, and that nothing already written is lost or mixed with another
run: a corrupt latest checkpoint, a relaunch with another config, a preprocessing that fails
on a folder holding good data, a loss that turns NaN.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raylm import stages
from raylm.data.synthetic import sentiment_recipe, write_sentiment_corpus
from raylm.recipe import ConfigError, config_from_dict
from raylm.train.checkpoint import checkpoint_root, list_checkpoints

pytestmark = pytest.mark.integration


def _cfg(tmp: Path, name: str, data: dict | None = None, model: dict | None = None, **train):
    raw = sentiment_recipe(
        tmp, name, **{"epochs": 2, "lr": 2e-3, "log_every": 5, "shuffle_buffer": 0, **train}
    )
    raw["data"].update(data or {})
    raw["model"].update(model or {})
    return config_from_dict(raw)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, ray_session) -> Path:
    tmp = tmp_path_factory.mktemp("chaos")
    write_sentiment_corpus(tmp / "corpus.jsonl", n=600, seed=0)
    stages.preprocess(_cfg(tmp, "prep"))
    return tmp


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_complete_one(corpus):
    run = {"num_workers": 2, "zero_stage": 2, "eval_every": 10}
    first = stages.train(_cfg(corpus, "corrupt", max_steps=20, **run))
    root = checkpoint_root(corpus / "runs" / "corrupt")
    # Kept (keep_checkpoints 2): the epoch's end (15 steps of 2 workers) and step 20.
    names = sorted(p.name for p in root.glob("checkpoint_step*"))
    assert len(names) == 2 and names[-1] == "checkpoint_step0000020", names
    previous = int(names[0].removeprefix("checkpoint_step"))
    # Truncate rank 1's optimizer shard of the latest checkpoint, as a crash mid-write would.
    (shard,) = (root / "checkpoint_step0000020" / "ds").rglob("*rank_1*optim_states.pt")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    states = {r["checkpoint"]: r for r in list_checkpoints(corpus / "runs" / "corrupt")}
    assert states[names[0]]["state"] == "complete" and states[names[0]]["step"] == previous
    bad = states["checkpoint_step0000020"]
    assert bad["state"] == "corrupt" and shard.name in bad["detail"] and "bytes" in bad["detail"]

    resumed = stages.train(_cfg(corpus, "corrupt", max_steps=30, **run))
    steps = [r["step"] for r in resumed["history"] if "train_loss" in r]
    assert steps == [5, 10, 15, 20, 25, 30]  # the steps after `previous` redone once
    # The history up to `previous` is the first run's, restored from that checkpoint.
    upto = [r for r in first["history"] if r["step"] <= previous]
    assert [r for r in resumed["history"] if r["step"] <= previous][: len(upto)] == upto
    # Checkpoints of the redone steps get folders of their own (Ray Train then evicts older
    # ones, by score, down to keep_checkpoints).
    names = sorted(p.name for p in root.glob("checkpoint_step*"))
    assert "checkpoint_step0000030_f1" in names, names
    assert all(n.endswith("_f1") for n in names if int(n[15:22]) > previous), names
    assert Path(resumed["best_checkpoint"]).name.endswith("_f1")


def test_relaunch_with_another_config_is_refused_before_anything_is_written(corpus):
    run_dir = corpus / "runs" / "prep"
    before_data, before_record = _snapshot(corpus / "data"), (run_dir / "config.yaml").read_bytes()
    with pytest.raises(ConfigError) as err:
        stages.preprocess(_cfg(corpus, "prep", data={"tokenizer": {"vocab_size": 400}}))
    assert "data.tokenizer.vocab_size: 300 recorded, 400 now" in str(err.value)
    with pytest.raises(ConfigError, match=r"model.hidden_size: 32 recorded, 64 now"):
        stages.train(_cfg(corpus, "prep", model={"hidden_size": 64}))
    assert not (run_dir / "ray").exists()  # no worker started, no checkpoint folder made
    assert _snapshot(corpus / "data") == before_data
    assert (run_dir / "config.yaml").read_bytes() == before_record
    # A change that does not touch what the folder holds is allowed, and recorded.
    stages.preprocess(_cfg(corpus, "prep", epochs=5))
    (entry,) = [json.loads(x) for x in (run_dir / "config_changes.jsonl").read_text().splitlines()]
    assert entry["changes"] == {"train.epochs": [2, 5]}


def test_failed_preprocessing_keeps_the_previous_data(tmp_path, ray_session):
    write_sentiment_corpus(tmp_path / "corpus.jsonl", n=300, seed=1)
    stages.preprocess(_cfg(tmp_path, "keep"))
    before = _snapshot(tmp_path / "data")
    assert any(k.startswith("train/") for k in before)
    assert any(k.startswith("tokenizer/") for k in before)
    # The same config over an input that now yields nothing usable.
    (tmp_path / "corpus.jsonl").write_text('{"text": "", "label": "pos"}\n' * 5)
    with pytest.raises(ValueError, match="0 training examples .* previous data .* is kept"):
        stages.preprocess(_cfg(tmp_path, "keep"))
    assert _snapshot(tmp_path / "data") == before
    assert not (tmp_path / "data.staging").exists()
    assert '"reason": "empty"' in (tmp_path / "runs" / "keep" / "rejects.failed.jsonl").read_text()


def test_a_loss_that_turns_nan_stops_the_run_naming_the_steps(corpus):
    with pytest.raises(Exception, match=r"training loss is (nan|inf) over steps \d+-\d+"):
        stages.train(_cfg(corpus, "nan", lr=1e30, max_grad_norm=0, max_steps=10, log_every=2))
    assert not list((corpus / "runs" / "nan").glob("train_result.json"))
