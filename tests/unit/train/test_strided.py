"""raylm.train.strided: a streamed split read whole by every rank, which keeps its own rows of
each group: the same rows in the same order at every launch, disjoint ranks, equal counts."""

from __future__ import annotations

import pytest

from raylm.train.strided import strided_batches


@pytest.fixture
def stream(ray_session):
    """A lazy split of 103 rows in 7 blocks, executed anew at every read, in order."""
    import ray

    def dataset():
        ds = ray.data.range(103, override_num_blocks=7).map_batches(lambda b: b)  # lazy
        ds.context.execution_options.preserve_order = True
        return ds

    return dataset


def _read(ds, rank: int, ranks: int, **kw) -> list[list[int]]:
    return list(strided_batches(ds, rank, ranks, 4, lambda b: b["id"].tolist(), **kw))


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_share_every_group_and_read_the_same_rows_at_every_launch(stream, ranks):
    per_rank = [_read(stream(), r, ranks) for r in range(ranks)]
    again = [_read(stream(), r, ranks) for r in range(ranks)]
    assert per_rank == again  # another execution of the stream: the same rows, the same order
    assert len({len(b) for b in per_rank}) == 1  # as many micro-batches on every rank
    for step in zip(*per_rank, strict=True):  # step by step: equal sizes, no row twice
        assert len({len(b) for b in step}) == 1 and len(step[0]) <= 4
    rows = sorted(x for batches in per_rank for b in batches for x in b)
    assert len(rows) == len(set(rows)) and set(rows) <= set(range(103))
    assert 103 - len(rows) < ranks  # only the last group's remainder is left out
    assert per_rank[0][0] == list(range(0, 4 * ranks, ranks))  # rank 0: rows 0, n, 2n, ...


def test_a_seeded_shuffle_is_the_same_on_every_rank_and_launch(stream):
    a = [_read(stream(), r, 2, shuffle_buffer=32, seed=7) for r in range(2)]
    b = [_read(stream(), r, 2, shuffle_buffer=32, seed=7) for r in range(2)]
    other = [_read(stream(), r, 2, shuffle_buffer=32, seed=8) for r in range(2)]
    assert a == b and a != other
    rows = [x for batches in a for batch in batches for x in batch]
    assert len(rows) == len(set(rows)) and 103 - len(rows) < 2  # all ranks shuffled alike
    assert rows != sorted(rows)
    with pytest.raises(ValueError, match="rank 2 of 2"):
        next(strided_batches(stream(), 2, 2, 4, list))
