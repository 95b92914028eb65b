"""Train a tokenizer on the data with the `tokenizers` library, or load a pretrained one.

    tok = train_tokenizer(texts, cfg.data.tokenizer, "runs/x/data/tokenizer", kind="wordpiece")
    tok = load_tokenizer("runs/x/data/tokenizer")

`wordpiece` suits BERT-style encoders (every CJK char its own token, [CLS] x [SEP]);
`bytelevel_bpe` suits GPT-style causal LMs (`<|endoftext|>` as eos, bos, unk and pad).
transformers is imported inside the functions: it is slow to import and workers may not need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylm.config import TokenizerConfig

WORDPIECE_SPECIALS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
ENDOFTEXT = "<|endoftext|>"
BPE_SPECIALS = {
    "bos_token": ENDOFTEXT,
    "eos_token": ENDOFTEXT,
    "unk_token": ENDOFTEXT,
    "pad_token": ENDOFTEXT,
}


def _wordpiece(texts: Iterator[str], vocab_size: int, min_frequency: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # handle_chinese_chars puts spaces around every CJK char, so each becomes its own word.
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    specials = list(WORDPIECE_SPECIALS.values())
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def _bytelevel_bpe(texts: Iterator[str], vocab_size: int, min_frequency: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps offsets on the raw text; GPT-2 uses the same post-processor.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[ENDOFTEXT],
        show_progress=False,
        # All 256 byte symbols up front, so no input is ever out of vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_tokenizer(
    texts_iter: Iterable[str],
    tok_cfg: TokenizerConfig,
    out_dir: str | Path,
    kind: str | None = None,
) -> Any:
    """Train `kind` (default `tok_cfg.kind`) on the texts; save to out_dir; return the HF tokenizer.

    The result is a `transformers.PreTrainedTokenizerFast` with its special tokens set, saved with
    `save_pretrained` so `AutoTokenizer.from_pretrained(out_dir)` loads it.
    """
    from transformers import PreTrainedTokenizerFast

    kind = kind or tok_cfg.kind
    texts = iter(texts_iter)
    if kind == "wordpiece":
        backend = _wordpiece(texts, tok_cfg.vocab_size, tok_cfg.min_frequency)
        specials = WORDPIECE_SPECIALS
    elif kind == "bytelevel_bpe":
        backend = _bytelevel_bpe(texts, tok_cfg.vocab_size, tok_cfg.min_frequency)
        specials = BPE_SPECIALS
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}: use 'wordpiece' or 'bytelevel_bpe'")
    if backend.get_vocab_size() <= len(set(specials.values())):
        raise ValueError("tokenizer training saw no text: is the training split empty?")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **specials)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def load_tokenizer(path_or_id: str | Path) -> Any:
    """`AutoTokenizer.from_pretrained` on a local folder (or a hub id, where a hub is reachable)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path_or_id))
