"""Masked-LM data for BERT-style encoders: packing with word boundaries, and dynamic masking.

    raylm preprocess examples/bert_pretrain_zh.yaml   # clean/dedup/split, then pack_mlm

Packing (Ray Data): documents are tokenized without special tokens, each followed by [SEP],
concatenated and cut into blocks of `data.max_length` tokens that start with [CLS]. Beside
`input_ids` each block keeps `words`: the index of the word each token belongs to (-1 for
[CLS]/[SEP], which are never masked). With `data.mlm.whole_word` the words are jieba's
segmentation of the document (a Chinese word spans several character tokens); without it every
token is its own word. A word split across two blocks is two words.

Masking (`collate_mlm`, in the training loop): per block, words are drawn at random until
`mask_prob` of its maskable tokens are chosen; every token of a chosen word is predicted (its
label) and replaced by [MASK] 80% of the time, a random token 10%, itself 10% (BERT). The draw
is seeded by (seed, the block's content), and the loop passes `train.seed + epoch`: a different
mask every epoch, the same one for the same epoch on any worker count and after a resume.
Validation uses `train.seed` alone, so its mask is the same at every evaluation.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raylm.data.collate import IGNORE_INDEX

if TYPE_CHECKING:
    from raylm.config import Config

NOT_A_WORD = -1  # [CLS], [SEP]: never masked


# ------------------------------------------------------------------------------ word boundaries
def word_spans(words: Sequence[str]) -> list[int]:
    """Start offsets of consecutive words (a segmenter's output, joined = the text)."""
    starts, at = [], 0
    for w in words:
        starts.append(at)
        at += len(w)
    return starts


def token_words(offsets: Sequence[tuple[int, int]], starts: Sequence[int] | None) -> list[int]:
    """The word index of each token, from the tokens' character offsets and the words' start
    offsets (None: every token its own word)."""
    if starts is None:
        return list(range(len(offsets)))
    return [max(0, bisect_right(starts, begin) - 1) for begin, _ in offsets]


def jieba_segmenter() -> Callable[[str], list[str]]:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return lambda text: jieba.lcut(text, HMM=True)


# ---------------------------------------------------------------------------------- packing
class MLMPacker:
    """Cuts tokenized documents into [CLS]-led blocks; carries word indices along (renumbered
    from 0 in each block, so a word cut by a block edge is two words)."""

    def __init__(self, block_size: int, cls_id: int, sep_id: int):
        if block_size < 3:
            raise ValueError(f"data.max_length must be >= 3 for masked-LM blocks, got {block_size}")
        self.body = block_size - 1  # one place for [CLS]
        self.cls_id, self.sep_id = cls_id, sep_id

    def pack(self, docs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, list]:
        """docs: (token ids, word index per token). Returns `input_ids` and `words` lists; the
        final block of the call may be shorter (Ray Data gives no end-of-input hook)."""
        ids: list[int] = []
        words: list[int] = []
        offset = 0
        for tokens, word_of in docs:
            if not len(tokens):
                continue
            ids.extend(int(t) for t in tokens)
            words.extend(offset + int(w) for w in word_of)
            offset += int(max(word_of)) + 1
            ids.append(self.sep_id)
            words.append(NOT_A_WORD)
        out_ids, out_words = [], []
        for at in range(0, len(ids), self.body):
            chunk, chunk_words = ids[at : at + self.body], words[at : at + self.body]
            if sum(w != NOT_A_WORD for w in chunk_words) == 0:
                continue  # a lone [SEP]: nothing to predict
            out_ids.append([self.cls_id, *chunk])
            out_words.append([NOT_A_WORD, *_renumber(chunk_words)])
        return {"input_ids": out_ids, "words": out_words}


def _renumber(words: list[int]) -> list[int]:
    seen: dict[int, int] = {}
    return [w if w == NOT_A_WORD else seen.setdefault(w, len(seen)) for w in words]


class TokenizeSegmentPack:
    """`map_batches` callable (one tokenizer and segmenter per process): text -> MLM blocks."""

    def __init__(self, tokenizer_dir: str, block_size: int, whole_word: bool) -> None:
        from raylm.data.tokenizer import load_tokenizer

        self.tok = load_tokenizer(tokenizer_dir)
        missing = [n for n in ("cls", "sep", "mask") if getattr(self.tok, f"{n}_token_id") is None]
        if missing:
            raise ValueError(
                f"{tokenizer_dir}: masked-LM needs [CLS], [SEP] and [MASK] tokens; this "
                f"tokenizer has no {', '.join(missing)} token (data.tokenizer.kind: wordpiece)"
            )
        self.packer = MLMPacker(block_size, self.tok.cls_token_id, self.tok.sep_token_id)
        self.segment = jieba_segmenter() if whole_word else None

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        texts = [str(t) for t in batch["text"]]
        enc = self.tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        docs = []
        for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"], strict=True):
            starts = word_spans(self.segment(text)) if self.segment else None
            docs.append((ids, token_words(offsets, starts)))
        out = self.packer.pack(docs)
        return pa.table(
            {
                "input_ids": pa.array(out["input_ids"], pa.list_(pa.int32())),
                "words": pa.array(out["words"], pa.list_(pa.int32())),
            }
        )


def pack_mlm(cfg: Config, data_dir: Path) -> dict[str, Any]:
    """Tokenize, segment and pack the train/validation/test splits of `pipeline.preprocess`."""
    from raylm.data.lm_pipeline import PACK_BATCH_DOCS, write_encoded
    from raylm.data.pipeline import SPLITS, read_split
    from raylm.data.workers import per_process

    out = {}
    for split in SPLITS:
        packed = (
            read_split(data_dir, split)
            .select_columns(["text"])
            .map_batches(
                **per_process(
                    TokenizeSegmentPack,
                    tokenizer_dir=str(data_dir / "tokenizer"),
                    block_size=cfg.data.max_length,
                    whole_word=cfg.data.mlm.whole_word,
                ),
                batch_size=PACK_BATCH_DOCS,
                batch_format="numpy",
            )
        )
        out[split] = write_encoded(packed, data_dir / "encoded" / split)
        print(
            f"[preprocess] pack mlm   {split}: {out[split]['examples']} blocks of "
            f"<= {cfg.data.max_length}, {out[split]['tokens']} tokens"
            f"{' (whole-word)' if cfg.data.mlm.whole_word else ''}",
            flush=True,
        )
    return out


# ---------------------------------------------------------------------------------- masking
def block_rng(seed: int, ids: np.ndarray) -> np.random.Generator:
    """The mask draw of one block: from the seed and the block's tokens, nothing else."""
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(np.asarray(ids, np.int32))])


def mask_block(
    ids: np.ndarray,
    words: np.ndarray,
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    mask_prob: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """(masked input ids, labels) of one block: whole words chosen until `mask_prob` of the
    maskable tokens are; labels are IGNORE_INDEX except at the chosen tokens."""
    ids = np.asarray(ids, dtype=np.int64)
    words = np.asarray(words, dtype=np.int64)
    maskable = words != NOT_A_WORD
    labels = np.full_like(ids, IGNORE_INDEX)
    n_words = int(words.max()) + 1 if maskable.any() else 0
    if n_words == 0:
        return ids.copy(), labels
    want = max(1, int(round(mask_prob * int(maskable.sum()))))
    sizes = np.bincount(words[maskable], minlength=n_words)
    chosen, total = [], 0
    for w in rng.permutation(n_words):
        if total >= want:
            break
        if sizes[w] == 0 or (chosen and total + sizes[w] > want + sizes[w] // 2):
            continue  # a long word that would overshoot by more than half of it: skip it
        chosen.append(w)
        total += int(sizes[w])
    picked = np.isin(words, chosen) & maskable
    labels[picked] = ids[picked]
    out = ids.copy()
    roll = rng.random(len(ids))
    out[picked & (roll < 0.8)] = mask_id
    swap = picked & (roll >= 0.8) & (roll < 0.9)
    out[swap] = rng.integers(0, vocab_size, int(swap.sum()))
    return out, labels


def collate_mlm(
    batch: dict[str, Any], pad_id: int, mask_id: int, vocab_size: int, seed: int, mask_prob: float
) -> dict[str, Any]:
    """Pad a batch of blocks and mask each (see `mask_block`); tensors for BertForMaskedLM."""
    import torch

    rows = [
        mask_block(ids, words, block_rng(seed, ids), mask_id, vocab_size, mask_prob)
        for ids, words in zip(batch["input_ids"], batch["words"], strict=True)
    ]
    width = max(len(ids) for ids, _ in rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    attention = np.zeros((len(rows), width), dtype=np.int64)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)], labels[i, : len(ids)], attention[i, : len(ids)] = ids, lab, 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention),
        "labels": torch.from_numpy(labels),
    }
