"""Masked-LM data: word boundaries from jieba, [CLS]-led packing, and dynamic (whole-word)
masking that is reproducible from the seed and the block alone."""

from __future__ import annotations

import numpy as np
import pytest

from raylm.config import TokenizerConfig
from raylm.data.collate import IGNORE_INDEX
from raylm.data.mlm import (
    NOT_A_WORD,
    MLMPacker,
    TokenizeSegmentPack,
    block_rng,
    collate_mlm,
    jieba_segmenter,
    mask_block,
    token_words,
    word_spans,
)
from raylm.data.tokenizer import train_tokenizer

SENTENCES = [
    "我爱北京天安门",
    "今天天气很好，我们去公园散步",
    "中华人民共和国成立了",
    "研究生命的起源",
    "他在清华大学读书",
]
MASK, VOCAB = 4, 200


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(SENTENCES * 20, TokenizerConfig(vocab_size=100, min_frequency=1), out)
    return out


def _words_of(text: str, tokenizer_dir) -> tuple[list[str], list[int], list[str]]:
    from raylm.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    words = jieba_segmenter()(text)
    pieces = [text[a:b] for a, b in enc["offset_mapping"]]
    return words, token_words(enc["offset_mapping"], word_spans(words)), pieces


def test_jieba_words_group_the_characters_of_each_word(tokenizer_dir):
    words, word_of, pieces = _words_of("我爱北京天安门", tokenizer_dir)
    assert words == ["我", "爱", "北京", "天安门"]
    assert pieces == list("我爱北京天安门")  # the WordPiece tokenizer splits CJK characters
    assert word_of == [0, 1, 2, 2, 3, 3, 3]


def test_every_token_maps_to_the_word_that_holds_its_characters(tokenizer_dir):
    for text in SENTENCES:
        words, word_of, pieces = _words_of(text, tokenizer_dir)
        assert "".join(words) == text
        rebuilt = [""] * len(words)
        for piece, w in zip(pieces, word_of, strict=True):
            rebuilt[w] += piece
        assert rebuilt == words, text


def test_without_whole_words_each_token_is_its_own_word():
    assert token_words([(0, 1), (1, 2), (2, 4)], None) == [0, 1, 2]


def test_packing_starts_blocks_with_cls_and_renumbers_words():
    packer = MLMPacker(block_size=6, cls_id=2, sep_id=3)
    docs = [([10, 11, 12], [0, 0, 1]), ([20, 21, 22, 23], [0, 1, 1, 2])]
    out = packer.pack(docs)
    assert out["input_ids"] == [[2, 10, 11, 12, 3, 20], [2, 21, 22, 23, 3]]
    # words: doc 1 has 0,0,1; [SEP] -1; doc 2's first word continues into the next block as a
    # new word there (a word cut by the block edge is two words).
    assert out["words"] == [[-1, 0, 0, 1, -1, 2], [-1, 0, 0, 1, -1]]
    assert all(len(b) <= 6 for b in out["input_ids"])


def test_packing_refuses_a_block_too_small():
    with pytest.raises(ValueError, match="data.max_length must be >= 3"):
        MLMPacker(block_size=2, cls_id=2, sep_id=3)


def test_the_packer_refuses_a_tokenizer_without_mask(tmp_path):
    out = tmp_path / "bpe"
    train_tokenizer(SENTENCES * 5, TokenizerConfig(kind="bytelevel_bpe", vocab_size=300), out)
    with pytest.raises(ValueError, match="needs \\[CLS\\], \\[SEP\\] and \\[MASK\\]"):
        TokenizeSegmentPack(str(out), 32, whole_word=False)


def test_the_ray_data_callable_packs_whole_words(tokenizer_dir):
    pack = TokenizeSegmentPack(str(tokenizer_dir), 64, whole_word=True)
    table = pack({"text": np.array(SENTENCES[:2], dtype=object)}).to_pydict()
    (ids,), (words,) = table["input_ids"], table["words"]
    assert ids[0] == pack.tok.cls_token_id and ids.count(pack.tok.sep_token_id) == 2
    text = pack.tok.convert_ids_to_tokens(ids)
    by_word: dict[int, str] = {}
    for piece, w in zip(text, words, strict=True):
        if w != NOT_A_WORD:
            by_word[w] = by_word.get(w, "") + piece
    assert list(by_word.values())[:4] == ["我", "爱", "北京", "天安门"]


def _block(words: list[int]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([2] + [10 + i for i in range(len(words) - 1)], dtype=np.int64)
    return ids, np.array(words, dtype=np.int64)


def test_a_masked_word_is_masked_whole_and_its_neighbours_are_not():
    # 30 words of 1-4 characters, [CLS] first and [SEP] last.
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 5, 30)
    words = [NOT_A_WORD] + [w for w, n in enumerate(sizes) for _ in range(n)] + [NOT_A_WORD]
    ids, words = _block(words)
    for seed in range(50):
        _, labels = mask_block(ids, words, block_rng(seed, ids), MASK, VOCAB)
        picked = labels != IGNORE_INDEX
        assert picked.any()
        for w in np.unique(words[picked]):
            assert picked[words == w].all(), f"seed {seed}: word {w} only partly masked"
        assert not picked[words == NOT_A_WORD].any()  # [CLS], [SEP] never
        assert (labels[picked] == ids[picked]).all()


def test_about_fifteen_percent_masked_eighty_ten_ten():
    ids, words = _block([NOT_A_WORD] + list(range(120)) + [NOT_A_WORD])
    picked = masked = swapped = kept = 0
    for seed in range(400):
        out, labels = mask_block(ids, words, block_rng(seed, ids), MASK, VOCAB)
        p = labels != IGNORE_INDEX
        picked += p.sum()
        masked += (out[p] == MASK).sum()
        kept += (out[p] == ids[p]).sum()
        swapped += ((out[p] != MASK) & (out[p] != ids[p])).sum()
        assert (out[~p] == ids[~p]).all()  # nothing outside the chosen tokens changes
    assert picked / (400 * 120) == pytest.approx(0.15, abs=0.005)
    assert masked / picked == pytest.approx(0.8, abs=0.02)
    assert kept / picked == pytest.approx(0.1, abs=0.02)  # (a random swap may hit itself)
    assert swapped / picked == pytest.approx(0.1, abs=0.02)


def test_the_mask_depends_on_the_seed_and_the_block_only():
    rows = [_block([NOT_A_WORD] + list(range(40)) + [NOT_A_WORD]) for _ in range(2)]
    rows[1] = (rows[1][0] + 1, rows[1][1])  # another block
    batch = {"input_ids": [r[0] for r in rows], "words": [r[1] for r in rows]}
    alone = {"input_ids": [rows[0][0]], "words": [rows[0][1]]}
    a = collate_mlm(batch, 0, MASK, VOCAB, seed=7, mask_prob=0.15)
    b = collate_mlm(batch, 0, MASK, VOCAB, seed=7, mask_prob=0.15)
    c = collate_mlm(alone, 0, MASK, VOCAB, seed=7, mask_prob=0.15)
    d = collate_mlm(batch, 0, MASK, VOCAB, seed=8, mask_prob=0.15)  # the next epoch
    assert (a["labels"] == b["labels"]).all() and (a["input_ids"] == b["input_ids"]).all()
    assert (a["labels"][0] == c["labels"][0]).all()  # whatever else shares its batch
    assert not (a["labels"][0] == d["labels"][0]).all()


def test_collate_pads_and_never_scores_padding():
    short = _block([NOT_A_WORD, 0, 1, NOT_A_WORD])
    long = _block([NOT_A_WORD] + list(range(20)) + [NOT_A_WORD])
    batch = {"input_ids": [short[0], long[0]], "words": [short[1], long[1]]}
    out = collate_mlm(batch, 0, MASK, VOCAB, seed=1, mask_prob=0.15)
    assert out["input_ids"].shape == (2, 22)
    assert out["attention_mask"][0].tolist() == [1] * 4 + [0] * 18
    assert (out["labels"][0, 4:] == IGNORE_INDEX).all()
    assert (out["labels"][0] != IGNORE_INDEX).sum() >= 1  # even a short block predicts one
