"""Train a tokenizer on the data with the `tokenizers` library, or load a pretrained one.

    tok = train_tokenizer(texts, cfg.data.tokenizer, "runs/x/data/tokenizer", kind="wordpiece")
    tok = load_tokenizer("runs/x/data/tokenizer")

`wordpiece` suits BERT-style encoders (every CJK char its own token, [CLS] x [SEP]);
`bytelevel_bpe` suits GPT-style causal LMs (`<|endoftext|>` as eos, bos, unk and pad).
transformers is imported inside the functions: it is slow to import and workers may not need it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


def _bert_pipeline(tok: Any) -> Any:
    """BERT's normalizer, pre-tokenizer and decoder. handle_chinese_chars puts spaces around every
    CJK char, so each becomes its own word."""
    from tokenizers import decoders, normalizers, pre_tokenizers

    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _train_wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int, seed: list[str]):
    from tokenizers import Tokenizer, models
    from tokenizers.trainers import WordPieceTrainer

    tok = _bert_pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]")))
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(WORDPIECE_SPECIALS.values()) + seed,
        show_progress=False,
    )
    tok.train_from_iterator(iter(texts), trainer=trainer)
    return tok


def _wordpiece(texts: Callable[[], Iterable[str]], vocab_size: int, min_frequency: int) -> Any:
    """WordPiece, the same vocabulary from the same texts in every process.

    The trainer numbers each continuing piece (`##x`) in the order it meets it in a hash map,
    whose order differs per process, and breaks ties between equally frequent merges by those
    numbers: the same texts gave 3,695 or 3,693 tokens. A first pass without merges
    (vocab_size 0) finds the `##x` pieces; the second pass is handed them, sorted, after the
    special tokens, so every number and so every tie-break is fixed. The result is rebuilt as a
    plain WordPiece model over that vocabulary, with only the real special tokens.
    """
    from tokenizers import Tokenizer, models, processors

    pieces = _train_wordpiece(texts(), 0, min_frequency, []).get_vocab()
    seed = sorted(t for t in pieces if t.startswith("##") and len(t) == 3)
    vocab = _train_wordpiece(texts(), vocab_size, min_frequency, seed).get_vocab()
    model = models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##")
    tok = _bert_pipeline(Tokenizer(model))
    tok.add_special_tokens(list(WORDPIECE_SPECIALS.values()))
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


def _passes(texts: Iterable[str] | Callable[[], Iterable[str]]) -> Callable[[], Iterable[str]]:
    """A way to read the texts more than once: a callable is called per pass, a one-shot
    iterator is kept in memory, anything else (a list, a Ray dataset view) is iterated again."""
    if callable(texts):
        return texts
    if iter(texts) is texts:
        kept = list(texts)
        return lambda: kept
    return lambda: texts


def train_tokenizer(
    texts: Iterable[str] | Callable[[], Iterable[str]],
    tok_cfg: TokenizerConfig,
    out_dir: str | Path,
    kind: str | None = None,
) -> Any:
    """Train `kind` (default `tok_cfg.kind`) on the texts; save to out_dir; return the HF tokenizer.

    `texts` is read twice for WordPiece (see `_wordpiece`): pass a callable that starts a fresh
    stream to keep a large input out of memory. The same texts, in any order, give the same
    tokenizer in any process. The result is a `transformers.PreTrainedTokenizerFast` with its
    special tokens set, saved with `save_pretrained` so `AutoTokenizer.from_pretrained(out_dir)`
    loads it.
    """
    from transformers import PreTrainedTokenizerFast

    kind = kind or tok_cfg.kind
    read = _passes(texts)
    if kind == "wordpiece":
        backend = _wordpiece(read, tok_cfg.vocab_size, tok_cfg.min_frequency)
        specials = WORDPIECE_SPECIALS
    elif kind == "bytelevel_bpe":
        backend = _bytelevel_bpe(iter(read()), tok_cfg.vocab_size, tok_cfg.min_frequency)
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
    """`AutoTokenizer.from_pretrained` on a local folder (or a hub id, where a hub is reachable).
    A tokenizer without a pad token (GPT-2's) pads with its EOS, as fine-tuning GPT-2 does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path_or_id))
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok
