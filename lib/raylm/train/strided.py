"""A training split streamed from files, read by position: every rank reads the whole split in
its file order and keeps its own rows of each group, so that rank r of n reads the same rows in
the same order at every launch, and a resume that skips its consumed micro-batches skips exactly
the examples its checkpoint's ledger lists (raylm.train.ledger).

    for batch in strided_batches(shard, rank=r, ranks=n, batch_size=b, collate_fn=f, ...):

Why: Ray's `streaming_split` hands blocks to whichever rank asks first, so a restarted or
relaunched run may give a rank other rows than before; skipping by count could then train an
example twice or skip one. A cached split is cut in order (`driver._ordered_splits`); a split
streamed from files (too large to cache, or `train.cache_data: false`) is given whole to every
rank instead (`train.streamed_split: strided`, the default), and cut here.

How: the rows arrive in groups of `n x batch_size` (after the local shuffle, which every rank
runs over the same rows with the same seed, so all ranks shuffle alike), and rank r takes rows
r, r + n, r + 2n, ... of each group. The ranks together train on every row of a group once.
The last group is cut to a multiple of n, so every rank takes as many micro-batches as the
others (their collectives stay matched); the fewer than n rows left over are not trained on in
that epoch, as `split(n, equal=True)` leaves them out of a cached split.

Cost: every rank reads the whole split every epoch (and runs whatever its lazy pipeline does:
read, decode, tokenize): n reads of it instead of one, as Hugging Face's `split_dataset_by_node`
does for a stream whose files do not divide among the ranks. `train.streamed_split: dynamic`
keeps Ray's `streaming_split` (each row read once); its ledgers record what each rank trained
on, but a resume skips by count, and the examples around the position are not guaranteed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def strided_batches(
    shard: Any,
    rank: int,
    ranks: int,
    batch_size: int,
    collate_fn: Callable[[dict[str, Any]], Any],
    shuffle_buffer: int | None = None,
    seed: int | None = None,
) -> Iterator[Any]:
    """Rank `rank`'s micro-batches of a whole split (a Ray DataIterator or Dataset), collated."""
    if not 0 <= rank < ranks:
        raise ValueError(f"rank {rank} of {ranks}: not a rank")
    groups = shard.iter_batches(
        batch_size=batch_size * ranks,
        batch_format="numpy",
        local_shuffle_buffer_size=shuffle_buffer or None,
        local_shuffle_seed=seed if shuffle_buffer else None,
        drop_last=False,
    )
    for group in groups:
        rows = len(next(iter(group.values())))
        usable = rows - rows % ranks  # the same number of rows on every rank
        if usable:
            yield collate_fn({k: v[rank:usable:ranks] for k, v in group.items()})
