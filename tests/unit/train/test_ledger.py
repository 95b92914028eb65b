"""raylm.train.ledger: stable example ids, and a ledger that survives a checkpoint."""

from __future__ import annotations

import numpy as np

from raylm.train.ledger import IDS_KEY, Ledger, example_ids, read_ledgers


def _batch(rows: list[list[int]], labels: list[int]) -> dict:
    ids = np.empty(len(rows), dtype=object)
    ids[:] = [np.array(r, dtype=np.int32) for r in rows]
    return {"input_ids": ids, "labels": np.array(labels, dtype=np.int64)}


def test_an_example_has_one_id_whatever_batch_it_is_in():
    a = example_ids(_batch([[1, 2, 3], [4, 5], [6]], [0, 1, 0]))
    b = example_ids(_batch([[6], [1, 2, 3]], [0, 0]))
    assert a.dtype == np.uint64 and len(set(a.tolist())) == 3
    assert b[0] == a[2] and b[1] == a[0]
    # Another label, or the same tokens split differently, is another example.
    assert example_ids(_batch([[1, 2, 3]], [1]))[0] != a[0]
    assert example_ids(_batch([[1, 2], [3]], [0, 0]))[0] != a[0]
    # The ids a batch already carries are not hashed into its ids.
    assert example_ids({**_batch([[6]], [0]), IDS_KEY: np.array([7])})[0] == a[2]


def test_a_ledger_keeps_the_epoch_in_progress_and_the_one_before(tmp_path):
    ledger = Ledger(0)
    ledger.add(np.array([1, 2], np.uint64))
    ledger.add(np.array([3], np.uint64))
    ledger.start(0)  # the same epoch: nothing moves
    assert ledger.ids().tolist() == [1, 2, 3]
    ledger.start(1)
    ledger.add(np.array([2**64 - 1], np.uint64))
    ledger.save(tmp_path, 1)
    back = Ledger.read(tmp_path, 1)
    assert back.epoch == 1 and back.ids().tolist() == [2**64 - 1]
    assert back.previous[0] == 0 and back.previous[1].tolist() == [1, 2, 3]
    got = read_ledgers(tmp_path)[1]
    assert got[0].tolist() == [1, 2, 3] and got[1].tolist() == [2**64 - 1]
    assert Ledger.read(tmp_path, 0) is None  # a checkpoint written without one


def test_resuming_from_an_epochs_last_checkpoint_starts_the_next_epoch(tmp_path):
    ledger = Ledger(2)
    ledger.add(np.array([5, 6], np.uint64))
    ledger.save(tmp_path, 0)
    same = Ledger.read(tmp_path, 0).resumed_at(2)  # mid-epoch: continue it
    assert same.epoch == 2 and same.ids().tolist() == [5, 6]
    nxt = Ledger.read(tmp_path, 0).resumed_at(3)  # saved as epoch 2 ended
    assert nxt.epoch == 3 and nxt.ids().tolist() == [] and nxt.previous[1].tolist() == [5, 6]
