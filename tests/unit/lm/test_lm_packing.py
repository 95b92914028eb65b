"""Packing documents into fixed blocks for causal-LM pretraining, and its boundary rule.

Run: python -m pytest tests/unit/lm/test_lm_packing.py -q
"""

import random

import numpy as np
import pytest

from raylm.data.packing import BlockPacker, PackState, pack_batch, pack_documents

EOS = 0


def _docs(n: int, seed: int = 0) -> list[list[int]]:
    # Document k uses ids 1000k+1 .. 1000k+len: every id tells which document it came from.
    rng = random.Random(seed)
    return [[1000 * k + j + 1 for j in range(rng.randint(1, 40))] for k in range(n)]


def _doc_of(token: int) -> int:
    return token // 1000


def _stream(docs: list[list[int]]) -> list[int]:
    return [t for d in docs for t in [*d, EOS]]


def test_blocks_are_full_except_the_flushed_last_and_hold_exactly_the_stream():
    docs = _docs(30)
    blocks, state = pack_documents(docs, block_size=16, eos_id=EOS, flush=True)
    lengths = [len(b["input_ids"]) for b in blocks]
    assert all(n == 16 for n in lengths[:-1])
    assert 2 <= lengths[-1] <= 16
    # No padding anywhere: the blocks concatenated are the documents, each followed by one EOS.
    assert [t for b in blocks for t in b["input_ids"]] == _stream(docs)
    assert state.buffer == [] and state.documents == 30 and state.blocks == len(blocks)
    assert state.tokens == len(_stream(docs))


def test_without_flush_only_full_blocks_come_out_and_the_tail_is_carried():
    docs = _docs(10)
    blocks, state = pack_documents(docs, 16, EOS)
    assert all(len(b["input_ids"]) == 16 for b in blocks)
    assert len(state.buffer) == len(_stream(docs)) % 16
    assert [t for b in blocks for t in b["input_ids"]] + state.buffer == _stream(docs)


def test_carrying_state_across_calls_equals_packing_in_one_call():
    docs = _docs(50, seed=1)
    whole, _ = pack_documents(docs, 24, EOS, flush=True)
    pieces, state = [], None
    for lo, hi in [(0, 3), (3, 4), (4, 20), (20, 50)]:
        out, state = pack_documents(docs[lo:hi], 24, EOS, carry=state, flush=hi == 50)
        pieces.extend(out)
    assert pieces == whole


def test_boundary_rule_only_eos_predicts_across_documents():
    """Option (a): labels == input_ids and the model shifts them, so position j is trained to
    predict labels[j + 1]. Inside a block the only pairs that cross documents start at an EOS and
    land on the next document's first token; every other pair stays inside one document."""
    docs = _docs(40, seed=2)
    firsts = {d[0] for d in docs}
    blocks, _ = pack_documents(docs, 16, EOS, flush=True)
    crossings = 0
    for block in blocks:
        ids, labels = block["input_ids"], block["labels"]
        assert labels == ids
        for src, tgt in zip(ids[:-1], labels[1:], strict=True):
            if src == EOS:
                assert tgt in firsts  # visible boundary: EOS -> start of a document
                crossings += 1
            else:
                assert tgt == EOS or _doc_of(tgt) == _doc_of(src)
                assert tgt == EOS or tgt == src + 1
    assert crossings >= 10  # the rule was exercised, not vacuously true


def test_no_label_crosses_into_padding_when_blocks_are_collated():
    from raylm.data.collate import IGNORE_INDEX, collate_lm

    blocks, _ = pack_documents(_docs(7, seed=3), 32, EOS, flush=True)
    assert len(blocks[-1]["input_ids"]) < 32  # the batch holds the short final block
    batch = {"input_ids": [b["input_ids"] for b in blocks], "labels": [b["labels"] for b in blocks]}
    out = collate_lm(batch, pad_id=EOS)
    padded = out["attention_mask"] == 0
    assert padded.any()
    assert (out["labels"][padded] == IGNORE_INDEX).all()
    assert (out["labels"][~padded] != IGNORE_INDEX).all()


def test_documents_ending_in_eos_are_not_doubled_and_empty_ones_are_skipped():
    blocks, state = pack_documents([[5, 6, EOS], [], [7]], 4, EOS, flush=True)
    assert [b["input_ids"] for b in blocks] == [[5, 6, EOS, 7]]  # the tail [EOS] is dropped
    assert state.documents == 2
    # A one-token tail scores nothing once the model shifts labels: flush drops it.
    assert state.buffer == []


def test_block_size_below_two_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        pack_documents([[1, 2]], 1, EOS)


def test_labels_are_a_separate_list():
    blocks, _ = pack_documents([[1, 2, 3]], 4, EOS)
    blocks[0]["labels"][0] = -100
    assert blocks[0]["input_ids"][0] == 1


def _numpy_batch(docs: list[list[int]]) -> dict[str, np.ndarray]:
    col = np.empty(len(docs), dtype=object)
    col[:] = [np.asarray(d, dtype=np.int32) for d in docs]
    return {"input_ids": col, "text": np.array(["x"] * len(docs), dtype=object)}


def test_block_packer_carries_across_numpy_batches_then_flushes():
    docs = _docs(60, seed=4)
    whole, _ = pack_documents(docs, 32, EOS, flush=True)
    packer = BlockPacker(block_size=32, eos_id=EOS)
    out_ids = []
    for lo in range(0, 60, 7):
        out = packer(_numpy_batch(docs[lo : lo + 7]))
        assert set(out) == {"input_ids", "labels"}
        assert all(len(r) == 32 for r in out["input_ids"])
        out_ids.extend(out["input_ids"])
    out_ids.extend(packer.flush()["input_ids"])
    assert out_ids == [b["input_ids"] for b in whole]
    assert isinstance(packer.state, PackState) and packer.state.buffer == []


def test_flush_every_batch_keeps_no_state_and_ends_each_batch_short():
    packer = BlockPacker(block_size=32, eos_id=EOS, flush_every_batch=True)
    docs = _docs(20, seed=5)
    out = packer(_numpy_batch(docs))
    assert packer.state.buffer == []
    assert [t for r in out["input_ids"] for t in r] == _stream(docs)
    single, _ = pack_batch(_numpy_batch(docs), 32, EOS)
    assert single == out
