"""The data ledger: which training examples each rank has consumed in the epoch, written with
every checkpoint, so that a resume can be shown to see no example twice and to skip none.

    ledger = Ledger(epoch)                      # or Ledger.read(ckpt_dir, rank), on resume
    ledger.add(example_ids(numpy_batch))        # after each micro-batch is trained on
    ledger.save(ckpt_dir, rank)                 # beside the rank's shards (in its manifest)
    read_ledgers(ckpt_dir)                      # {rank: {epoch: ids in the order trained}}

An example's id is the first 8 bytes of BLAKE2b over its encoded columns (token ids, label or
targets): the same example has the same id in any run and on any rank, whatever the worker
count. A ledger file holds the epoch in progress and the epoch before it (8 bytes per example
each: 16 MB for a million examples per rank), `ledger_rank<r>.npz`, read without unpickling.

Within an epoch the loop resumes by position: rank r reads the same rows in the same order at
every launch (cached splits are cut in order, `driver._ordered_splits`; splits streamed from
files are read whole by every rank, which keeps its own rows, raylm.train.strided; the local
shuffle is seeded by the epoch) and skips the micro-batches it had consumed, which it reads and
collates again (the cost of a resume is one re-read of the epoch up to its position, no
training).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

PREFIX = "ledger_rank"
IDS_KEY = "_example_ids"  # the batch key that carries the ids from collate to the loop


def example_ids(batch: dict[str, Any]) -> np.ndarray:
    """uint64 ids of a numpy batch's rows: BLAKE2b-64 over each row's columns (by name)."""
    names = sorted(k for k in batch if k != IDS_KEY)
    n = len(batch[names[0]]) if names else 0
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        h = hashlib.blake2b(digest_size=8)
        for name in names:
            h.update(name.encode())
            h.update(np.ascontiguousarray(batch[name][i]).tobytes())
        out[i] = int.from_bytes(h.digest(), "little")
    return out


class Ledger:
    """The ids a rank consumed in `epoch` so far, and the complete list of the epoch before."""

    def __init__(self, epoch: int = 0):
        self.epoch = epoch
        self._parts: list[np.ndarray] = []
        self.previous: tuple[int, np.ndarray] | None = None

    def start(self, epoch: int) -> None:
        """Entering `epoch`: the one in progress becomes `previous` (it is complete)."""
        if epoch != self.epoch:
            self.previous = (self.epoch, self.ids())
            self.epoch, self._parts = epoch, []

    def add(self, ids: np.ndarray) -> None:
        self._parts.append(np.asarray(ids, dtype=np.uint64))

    def ids(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.empty(0, np.uint64)

    def save(self, folder: str | Path, rank: int) -> Path:
        path = Path(folder) / f"{PREFIX}{rank}.npz"
        prev_epoch, prev_ids = self.previous or (-1, np.empty(0, np.uint64))
        np.savez(path, epoch=self.epoch, ids=self.ids(), previous_epoch=prev_epoch,
                 previous_ids=prev_ids)  # fmt: skip
        return path

    @classmethod
    def read(cls, folder: str | Path, rank: int) -> Ledger | None:
        """This rank's ledger in a checkpoint (None: a checkpoint written without one)."""
        path = Path(folder) / f"{PREFIX}{rank}.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as f:
            ledger = cls(int(f["epoch"]))
            ledger.add(f["ids"])
            if int(f["previous_epoch"]) >= 0:
                ledger.previous = (int(f["previous_epoch"]), f["previous_ids"].astype(np.uint64))
        return ledger

    @classmethod
    def read_for(cls, folder: str | Path, rank: int, world: int) -> Ledger | None:
        """Rank `rank`'s ledger of `world` ranks from a checkpoint saved by any number of ranks:
        the ledgers of the ranks k there with k % world == rank, one after the other (all of
        them on one rank; none on a rank added since). The ranks' ledgers together still hold
        every example of the epoch once (raylm.train.elastic)."""
        saved = sorted(
            int(p.stem.removeprefix(PREFIX)) for p in Path(folder).glob(f"{PREFIX}*.npz")
        )
        if saved == list(range(world)) or not saved:
            return cls.read(folder, rank)
        ledgers = {k: cls.read(folder, k) for k in saved}  # a checkpoint's ranks share epochs
        mine = [ledger for k, ledger in ledgers.items() if k % world == rank]
        first = ledgers[saved[0]]
        out = cls(first.epoch)
        for ledger in mine:
            out.add(ledger.ids())
        if first.previous is not None:
            ids = [ledger.previous[1] for ledger in mine if ledger.previous is not None]
            out.previous = (first.previous[0], np.concatenate([np.empty(0, np.uint64), *ids]))
        return out

    def resumed_at(self, epoch: int) -> Ledger:
        """The ledger to continue from a checkpoint whose loop state is at `epoch`."""
        self.start(epoch)
        return self


def read_ledgers(folder: str | Path) -> dict[int, dict[int, np.ndarray]]:
    """Every rank's ledger in a checkpoint: {rank: {epoch: ids in the order trained}}."""
    out: dict[int, dict[int, np.ndarray]] = {}
    for path in sorted(Path(folder).glob(f"{PREFIX}*.npz")):
        rank = int(path.stem.removeprefix(PREFIX))
        ledger = Ledger.read(folder, rank)
        assert ledger is not None
        out[rank] = {ledger.epoch: ledger.ids()}
        if ledger.previous is not None:
            out[rank][ledger.previous[0]] = ledger.previous[1]
    return out
