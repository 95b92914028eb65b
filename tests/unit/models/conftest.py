"""Tiny checkpoints in the layouts of bert-base-chinese and gpt2 (tests/pretrained_layouts.py),
saved once per module, for the fine-tuning and LoRA unit tests."""

from __future__ import annotations

import pytest

from pretrained_layouts import save_bert_chinese_layout, save_gpt2_layout  # tests/
from raylm.data.synthetic import FILL, NEG, POS

# Every character the synthetic reviews use, so their texts tokenize without [UNK].
TEXTS = ["".join(FILL) + "".join(POS) + "".join(NEG) + "0123456789"] * 3 + ["好书", "很差的书"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_bert_chinese_layout(tmp_path_factory.mktemp("bert-base-chinese"), TEXTS)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_gpt2_layout(tmp_path_factory.mktemp("gpt2"), TEXTS)
