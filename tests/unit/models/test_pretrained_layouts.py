"""Fine-tuning starts from checkpoints in the layout of bert-base-chinese and gpt2 (saved here by
transformers itself): raylm's checks accept them, its builders put a fresh head on the
pretrained body, and a checkpoint that cannot take a task fails in one line naming both."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raylm.config import ModelConfig
from raylm.data.tokenizer import load_tokenizer
from raylm.preflight import check_pretrained
from raylm.recipe import load_config
from raylm.tasks import build_model

ROOT = Path(__file__).resolve().parents[3]


def test_the_layouts_are_the_hub_models_files(bert_dir, gpt2_dir):
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in bert_dir.iterdir()}
    gpt2_files = {p.name for p in gpt2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt"} <= gpt2_files


@pytest.mark.parametrize("layout", ["bert_dir", "gpt2_dir"])
def test_preflight_accepts_a_model_with_its_own_tokenizer(layout, request, tmp_path):
    folder = request.getfixturevalue(layout)
    cfg = load_config(
        ROOT / "examples/sentiment_zh_finetune.yaml",
        [f"model.path={folder}", f"data.tokenizer.path={folder}", f"run.output_dir={tmp_path}"],
    )
    check_pretrained(cfg)


def _classifier(folder: Path):
    tok = load_tokenizer(folder)
    model = build_model(ModelConfig(task="classification", path=str(folder)), len(tok), 2,
                        tok.pad_token_id)  # fmt: skip
    return tok, model.eval()


def _logits(tok, model, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def test_a_bert_chinese_checkpoint_gets_a_fresh_head_on_its_encoder(bert_dir):
    from transformers import BertForMaskedLM

    tok = load_tokenizer(bert_dir)
    assert tok.convert_ids_to_tokens(tok("很好")["input_ids"]) == ["[CLS]", "很", "好", "[SEP]"]
    clf = build_model(ModelConfig(task="classification", path=str(bert_dir)), len(tok), 2, 0)
    mlm = BertForMaskedLM.from_pretrained(bert_dir)
    body = mlm.bert.state_dict()
    for name, value in clf.bert.state_dict().items():
        if name in body:
            assert torch.equal(value, body[name]), name
    assert _logits(tok, clf.eval(), ["很好", "很差的书很差"]).shape == (2, 2)


def test_a_gpt2_checkpoint_classifies_padded_batches(gpt2_dir):
    tok, model = _classifier(gpt2_dir)
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"  # gpt2 has no pad token of its own
    logits = _logits(tok, model, ["好", "很差的书很差很差"])  # padding on the first row
    alone = _logits(tok, model, ["好"])
    assert logits.shape == (2, 2)
    # GPT-2 pools at the last real token: padding must not change the short row's logits.
    assert torch.allclose(logits[0], alone[0], atol=1e-5)


def test_masked_lm_on_a_decoder_only_checkpoint_fails_naming_both(gpt2_dir):
    with pytest.raises(ValueError) as err:
        build_model(ModelConfig(task="mlm", path=str(gpt2_dir)), 100)
    msg = str(err.value)
    assert "\n" not in msg and "GPT2LMHeadModel" in msg and "masked-LM pretraining" in msg


def test_extractive_qa_grows_a_third_token_type_copying_the_context_row(bert_dir):
    from transformers import AutoModelForMaskedLM

    from raylm.tasks import get_task

    base = AutoModelForMaskedLM.from_pretrained(str(bert_dir))
    before = base.bert.embeddings.token_type_embeddings.weight.detach().clone()
    assert before.shape[0] == 2
    cfg = ModelConfig(task="extractive_qa", path=str(bert_dir))
    model = build_model(cfg, base.config.vocab_size, 2, 0)
    table = model.base_model.embeddings.token_type_embeddings.weight
    assert table.shape[0] == model.config.type_vocab_size == 3
    assert torch.equal(table[:2], before) and torch.equal(table[2], before[1])
    with torch.device("meta"):
        skeleton = get_task("extractive_qa").skeleton(cfg, base.config.vocab_size)
    assert skeleton.config.type_vocab_size == 3
    scratch = build_model(ModelConfig(task="extractive_qa", preset="tiny"), 100, 2, 0)
    assert scratch.config.type_vocab_size == 3
