"""Elastic training's pure parts: the config range, the fixed data parts each worker count reads,
the batch sizes per worker count, and the ledgers a new rank takes over. The restarts themselves
run on a real multi-node Ray in tests/chaos/test_spot_nodes.py."""

from __future__ import annotations

import numpy as np
import pytest

from raylm.config import ConfigError, TrainConfig, parse_config
from raylm.train.deepspeed import ds_config
from raylm.train.elastic import interleave, my_parts, on_workers, part_names
from raylm.train.ledger import Ledger, read_ledgers


def _raw(**train) -> dict:
    return {"data": {"source": "jsonl", "paths": ["c.jsonl"]}, "train": train}


def _train(**kw) -> TrainConfig:
    return parse_config(_raw(**kw)).train


def test_a_range_of_workers_is_min_and_max():
    t = _train(num_workers=[1, 2])
    assert (t.min_workers, t.num_workers, t.elastic, t.fewest_workers) == (1, 2, True, 1)
    assert not _train(num_workers=2).elastic and _train(num_workers=2).fewest_workers == 2
    assert not _train(num_workers=[2, 2]).elastic  # one size: a fixed run


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"num_workers": [3, 2]}, r"\[3, 2\]: the fewest is more than the most"),
        ({"num_workers": [1, 2, 3]}, r"give one number, or \[min, max\]"),
        (
            {"num_workers": [2, 4]},
            r"4 micro-batches cannot be shared evenly by 3 .*grad_accum to 3",
        ),
        ({"num_workers": [1, 2], "cache_data": False}, r"train.cache_data false: elastic"),
        (
            {"num_workers": [2, 4], "grad_accum": 3, "parallel": {"tensor_parallel": 2}},
            r"elastic\) is for data-parallel runs",
        ),
    ],
)
def test_an_elastic_range_that_cannot_work_is_refused_naming_the_field(train, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw(**train), source="r.yaml")


def test_every_worker_count_reads_every_part_and_keeps_the_global_batch():
    t = _train(num_workers=[2, 4], grad_accum=3, batch_size=8)  # 12 parts
    assert part_names(t) == [f"train@{i}" for i in range(12)]
    for n in (2, 3, 4):
        read = [p for r in range(n) for p in my_parts(t, r, n)]
        assert sorted(read) == sorted(part_names(t))  # each part read by exactly one rank
        on_n = on_workers(t, n)
        assert on_n.grad_accum == 12 // n and len(my_parts(t, 0, n)) == on_n.grad_accum
        config = ds_config(on_n)  # what DeepSpeed's engine checks: micro x accum x world
        assert config["train_batch_size"] == 96 == 8 * on_n.grad_accum * n
    with pytest.raises(ValueError, match="5 worker"):
        on_workers(t, 5)


def test_interleave_takes_one_item_of_each_stream_in_turn():
    assert list(interleave([[1, 2, 3], "ab", []])) == [1, "a", 2, "b", 3]


def _ledgers(folder, world: int, epoch: int = 1) -> None:
    for r in range(world):
        ledger = Ledger(epoch - 1)
        ledger.add(np.array([100 + r], np.uint64))  # the epoch before
        ledger.start(epoch)
        ledger.add(np.arange(10 * r, 10 * r + 3, dtype=np.uint64))
        ledger.save(folder, r)


def test_new_ranks_take_over_the_ledgers_of_the_old_ones(tmp_path):
    _ledgers(tmp_path, world=2)
    one = Ledger.read_for(tmp_path, 0, 1)  # 2 -> 1: rank 0 takes both
    assert one.epoch == 1 and one.ids().tolist() == [0, 1, 2, 10, 11, 12]
    assert one.previous[0] == 0 and one.previous[1].tolist() == [100, 101]
    same = Ledger.read_for(tmp_path, 1, 2)  # same ranks: its own
    assert same.ids().tolist() == [10, 11, 12]

    (tmp_path / "b").mkdir()
    _ledgers(tmp_path / "b", world=1)
    grown = [Ledger.read_for(tmp_path / "b", r, 2) for r in (0, 1)]  # 1 -> 2
    assert grown[0].ids().tolist() == [0, 1, 2]
    assert grown[1].epoch == 1 and grown[1].ids().tolist() == []
    for r, ledger in enumerate(grown):  # saved again, the ranks' ledgers hold every id once
        ledger.save(tmp_path / "b", r)
    union = np.concatenate([by_epoch[1] for by_epoch in read_ledgers(tmp_path / "b").values()])
    assert sorted(union.tolist()) == [0, 1, 2]
