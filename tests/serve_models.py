"""Tiny untrained models for the Serve tests, exported as raylm writes them (weights, tokenizer,
raylm.json), built in seconds from configs with tokenizers trained on a few lines.

Imported by tests/integration/test_serve.py and tests/chaos/test_serve_faults.py as
`serve_models` (pytest puts tests/, the folder of the root conftest, on sys.path).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

TEXTS = [
    "这本书很好看我很喜欢",
    "质量太差了非常失望",
    "还行吧一般般",
    "推荐大家购买",
    "垃圾产品后悔",
    "good book, nice story",
    "bad, terrible",
    "物流很快包装完好",
]
TEMPLATE = "材料：{context}\n问：{question}\n答："


def save_model(model, tok, out: Path, meta: dict) -> Path:
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "raylm.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return out


def _lm_tokenizer(out: Path):
    from raylm.config import TokenizerConfig
    from raylm.data.tokenizer import train_tokenizer

    cfg = TokenizerConfig(vocab_size=300, min_frequency=1)
    return train_tokenizer(TEXTS * 4, cfg, out, kind="bytelevel_bpe")


def make_models(root: Path) -> dict[str, Path]:
    """A BERT classifier (`clf`, labels neg/neu/pos) and a GPT-2 QA model (`lm`)."""
    import torch

    from raylm.config import ModelConfig, TokenizerConfig
    from raylm.data.tokenizer import train_tokenizer
    from raylm.tasks import build_model

    torch.manual_seed(0)
    tok = train_tokenizer(TEXTS * 4, TokenizerConfig(vocab_size=200, min_frequency=1), root / "clf")
    labels = {0: "neg", 1: "neu", 2: "pos"}
    clf = build_model(
        ModelConfig(task="classification", hidden_size=32, num_heads=2),
        vocab_size=len(tok),
        num_labels=3,
        pad_token_id=tok.pad_token_id,
        id2label=labels,
    )
    meta = {
        "task": "classification",
        "id2label": {str(k): v for k, v in labels.items()},
        "max_length": 64,
    }
    save_model(clf, tok, root / "clf", meta)
    tok = _lm_tokenizer(root / "lm")
    lm = build_model(
        ModelConfig(task="qa", hidden_size=32, num_heads=2),
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    save_model(lm, tok, root / "lm", {"task": "qa", "max_length": 128, "prompt_template": TEMPLATE})
    return {"clf": root / "clf", "lm": root / "lm"}


def make_long_generator(out: Path, positions: int = 4096, layers: int = 4) -> Path:
    """A causal LM with a long context, so one stream can run for seconds (the presets' context
    is 512, hence a GPT-2 config of its own). Greedy within 4000 tokens it emits no eos: from
    "这本书很好" it streams a piece per token or so; from "推荐大家购买", 71 pieces, then ~2750
    lone bytes that complete no character (a stream silent for seconds), then text again."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _lm_tokenizer(out)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=layers,
        n_head=2,
        n_positions=positions,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return save_model(GPT2LMHeadModel(config), tok, out, {"task": "causal_lm"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
