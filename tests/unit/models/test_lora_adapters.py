"""LoRA (model.lora, through peft) without Ray: what trains, what the head is, the one-line
errors before anything starts, and that both export forms load to the model that trained.
The real 2-worker ZeRO-2 run is tests/integration/test_lora.py."""

from __future__ import annotations

import pytest
import torch

from raylm.config import ModelConfig
from raylm.configkit import ConfigError
from raylm.models.export import ModelMeta, export_model, load_model, write_hf_model
from raylm.recipe import config_from_dict
from raylm.tasks import build_model

LABELS = {0: "neg", 1: "pos"}


def _lora_classifier(path, **lora):
    cfg = ModelConfig(task="classification", path=str(path), lora={"r": 4, **lora})
    torch.manual_seed(0)
    return build_model(cfg, 0, 2, 0, None, LABELS)


def test_only_adapters_and_the_layers_the_checkpoint_lacks_train(bert_dir, gpt2_dir):
    from raylm.train.deepspeed import is_head

    bert = _lora_classifier(bert_dir, target_modules=["query", "value"])
    trained = {n for n, p in bert.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or ".modules_to_save." in n for n in trained), trained
    # The classifier and the pooler (absent from a masked-LM checkpoint) train beside them.
    heads = {n.split(".modules_to_save.")[0] for n in trained if ".modules_to_save." in n}
    assert heads == {"base_model.model.classifier", "base_model.model.bert.pooler.dense"}
    assert {n for n in trained if is_head(bert, n)} == {
        n for n in trained if ".modules_to_save." in n
    }
    # GPT-2 (peft's default target c_attn) gets its score head trained too.
    gpt2 = _lora_classifier(gpt2_dir)
    trained = {n for n, p in gpt2.named_parameters() if p.requires_grad}
    assert any("c_attn.lora_A" in n for n in trained)
    assert any(n.startswith("base_model.model.score.modules_to_save") for n in trained)


def test_both_exports_load_to_the_model_that_trained(bert_dir, tmp_path):
    model = _lora_classifier(bert_dir, target_modules=["query", "value"])
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: make the adapter change something
            torch.nn.init.normal_(p, std=0.5)
    ckpt = tmp_path / "ckpt"
    state = {k: v.clone() for k, v in model.state_dict().items()}
    write_hf_model(model, state, ckpt / "hf", ModelMeta("classification", 32, LABELS))
    assert (ckpt / "hf" / "adapter_config.json").is_file()
    assert not (ckpt / "hf" / "model.safetensors").exists()

    merged = export_model(ckpt, bert_dir, tmp_path / "merged")
    adapter = export_model(ckpt, bert_dir, tmp_path / "adapter", merge=False)
    assert (merged / "model.safetensors").is_file() and not (
        merged / "adapter_config.json"
    ).exists()
    assert (adapter / "adapter_config.json").is_file()
    ids = torch.tensor([[2, 10, 11, 12, 13, 3]])
    with torch.no_grad():
        want = model.eval()(input_ids=ids).logits
        for folder in (merged, adapter):
            got = load_model(folder, "AutoModelForSequenceClassification").eval()
            assert torch.allclose(got(input_ids=ids).logits, want, atol=1e-5), folder
            assert got.config.id2label == LABELS
    # Without a class named, an adapter's class follows the task it was trained for.
    assert type(load_model(adapter)).__name__ == "BertForSequenceClassification"


def _recipe(tmp_path, path, **lora):
    return {
        "data": {"source": "jsonl", "paths": [str(tmp_path / "x.jsonl")], "labels": ["a", "b"],
                 "tokenizer": {"path": str(path)}},
        "model": {"task": "classification", "path": str(path), "lora": lora},
        "run": {"name": "x", "output_dir": str(tmp_path)},
    }  # fmt: skip


def test_an_unknown_target_module_fails_before_anything_naming_the_layers(bert_dir, tmp_path):
    from raylm.preflight import check_pretrained

    cfg = config_from_dict(_recipe(tmp_path, bert_dir, target_modules=["query", "vlaue"]))
    with pytest.raises(ConfigError) as err:
        check_pretrained(cfg)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("model.lora.target_modules: vlaue names no layer of BertForMaskedLM")
    assert "its linear layers: dense, key, query, value" in line
    check_pretrained(config_from_dict(_recipe(tmp_path, bert_dir, target_modules=["query"])))


def test_lora_needs_a_pretrained_model(tmp_path):
    raw = _recipe(tmp_path, tmp_path)
    raw["model"] = {"task": "classification", "lora": {"r": 4}}
    with pytest.raises(ConfigError, match="`lora` adapts a pretrained model: set `path` too"):
        config_from_dict(raw)
    with pytest.raises(ConfigError, match="model.lora.r"):
        config_from_dict({**raw, "model": {"task": "classification", "lora": {"r": 0}}})


def test_lora_extractive_qa_trains_the_grown_token_type_table_and_the_span_head(bert_dir):
    from raylm.data.tokenizer import load_tokenizer

    tok = load_tokenizer(bert_dir)
    cfg = ModelConfig(task="extractive_qa", path=str(bert_dir), lora={"r": 4})
    model = build_model(cfg, len(tok), 2, tok.pad_token_id)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("token_type_embeddings" in n and "modules_to_save" in n for n in trained), trained
    assert any("qa_outputs" in n for n in trained)
    assert not any("word_embeddings" in n for n in trained)
