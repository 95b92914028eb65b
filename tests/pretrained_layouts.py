"""Tiny checkpoints saved by transformers itself in the exact layout of two hub models, for the
code path a hub id takes, minus the download:

    save_bert_chinese_layout(folder, texts)  # bert-base-chinese: BertForMaskedLM, vocab.txt
    save_gpt2_layout(folder, texts)          # gpt2: GPT2LMHeadModel, vocab.json + merges.txt

Their vocabularies come from `texts` (characters for BERT, as bert-base-chinese splits CJK text;
byte-level BPE for GPT-2); their weights are random (dimensions tiny).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_bert_chinese_layout(folder: Path, texts: Iterable[str], hidden: int = 32) -> Path:
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for t in texts for c in t if not c.isspace()})
    # bert-base-chinese keeps [unused] slots before the specials' ids; keep the order it uses.
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 4)] + BERT_SPECIALS[1:] + chars
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=False)
    tok.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(folder)
    return folder


def save_gpt2_layout(folder: Path, texts: Iterable[str], hidden: int = 32) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>"])  # fmt: skip
    bpe.save_model(str(folder))  # vocab.json, merges.txt
    tok = GPT2TokenizerFast(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
        unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
    )  # fmt: skip
    tok.save_pretrained(folder)  # like gpt2: no pad token
    config = GPT2Config(
        vocab_size=len(tok), n_embd=hidden, n_layer=2, n_head=2, n_positions=128,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder
