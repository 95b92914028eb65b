"""Model builders, one per model family: a Hugging Face model from a size preset or a path.

    model = sequence_classifier(cfg.model, vocab_size=8000, num_labels=2, pad_token_id=0)
    model = causal_lm(cfg.model, vocab_size=8000, pad_token_id=0, eos_token_id=1)

A preset builds a fresh model from a config (no download); `path` loads pretrained weights from a
local folder or a model id with plain `transformers`. Presets are a small table, not code. Which
builder a task uses is the task's business (`raylm.tasks`, `raylm.tasks.build_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raylm.config import ModelConfig


@dataclass(frozen=True)
class Preset:
    layers: int
    hidden: int
    heads: int
    max_positions: int = 512

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden


PRESETS: dict[str, Preset] = {
    "tiny": Preset(layers=2, hidden=128, heads=2),
    "small": Preset(layers=4, hidden=256, heads=4),
    "base": Preset(layers=12, hidden=768, heads=12),
}


def resolved_preset(cfg: ModelConfig) -> Preset:
    """The preset with the config's overrides (num_layers, hidden_size, num_heads) applied."""
    base = PRESETS[cfg.preset or "tiny"]
    hidden = cfg.hidden_size or base.hidden
    heads = cfg.num_heads or (base.heads if hidden % base.heads == 0 else 1)
    if hidden % heads:
        raise ValueError(f"model.hidden_size {hidden} is not divisible by num_heads {heads}")
    return Preset(
        layers=cfg.num_layers or base.layers,
        hidden=hidden,
        heads=heads,
        max_positions=base.max_positions,
    )


# Encoders a preset can build (`model.arch`): BERT's learned position embeddings, or RoFormer's
# rotary positions (same blocks otherwise; the folder loads in every Auto class BERT's does).
ENCODERS = {"bert": "BertConfig", "roformer": "RoFormerConfig"}


def _encoder_config(cfg: ModelConfig, vocab_size: int, num_labels: int, pad_token_id: int):
    import transformers

    config_class = getattr(transformers, ENCODERS[cfg.arch or "bert"])
    p = resolved_preset(cfg)
    dropout = 0.1 if cfg.dropout is None else cfg.dropout
    return config_class(
        vocab_size=vocab_size,
        hidden_size=p.hidden,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        intermediate_size=p.intermediate,
        max_position_embeddings=p.max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=num_labels,
        pad_token_id=pad_token_id,
    )


def _decoder_config(cfg: ModelConfig, vocab_size: int, pad_token_id: int, eos_token_id: int | None):
    from transformers import GPT2Config

    p = resolved_preset(cfg)
    dropout = 0.1 if cfg.dropout is None else cfg.dropout
    return GPT2Config(
        vocab_size=vocab_size,
        n_embd=p.hidden,
        n_layer=p.layers,
        n_head=p.heads,
        n_positions=p.max_positions,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        pad_token_id=pad_token_id,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
    )


def _finish(
    model: Any, cfg: ModelConfig, peft_task: str | None = None, fresh: list[str] | None = None
) -> Any:
    """Gradient checkpointing and LoRA adapters (`model.lora`: `peft_task` makes peft train the
    task head too, and `fresh` names layers the checkpoint lacked, initialised at random, which
    must train and be saved with the adapter) on a built model."""
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora is not None:
        from raylm.models.lora import add_lora

        if cfg.gradient_checkpointing:  # frozen embeddings would cut the recomputed graph
            model.enable_input_require_grads()
        model = add_lora(model, cfg.lora, peft_task, fresh)
    return model


def _pretrained(auto_class: Any, path: str, **kwargs: Any) -> tuple[Any, list[str]]:
    """The model from `path`, and its layers the checkpoint had no weights for (e.g. a masked-LM
    export lacks the classifier's pooler)."""
    model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    fresh = sorted({key.rsplit(".", 1)[0] for key in info.get("missing_keys", ())})
    return model, fresh


def label_maps(id2label: dict[int, str] | None) -> dict[str, Any]:
    if not id2label:
        return {}
    return {"id2label": dict(id2label), "label2id": {v: k for k, v in id2label.items()}}


def sequence_classifier(
    cfg: ModelConfig,
    vocab_size: int,
    num_labels: int = 2,
    pad_token_id: int = 0,
    id2label: dict[int, str] | None = None,
) -> Any:
    """A BERT-style encoder with a classification head (pretrained `path`: a new head on it)."""
    from transformers import AutoModelForSequenceClassification

    labels = label_maps(id2label)
    if cfg.path:
        config = _needs(cfg.path, "AutoModelForSequenceClassification", "classification")
        # A decoder (GPT-2) pools at the last non-pad token: it needs the tokenizer's pad id.
        pad = {} if config.pad_token_id is not None else {"pad_token_id": pad_token_id}
        model, fresh = _pretrained(
            AutoModelForSequenceClassification, cfg.path, num_labels=num_labels, **labels, **pad
        )
        return _finish(model, cfg, "SEQ_CLS", fresh)
    config = _encoder_config(cfg, vocab_size, num_labels, pad_token_id)
    for key, value in labels.items():
        setattr(config, key, value)
    return _finish(AutoModelForSequenceClassification.from_config(config), cfg)


def causal_lm(
    cfg: ModelConfig, vocab_size: int, pad_token_id: int = 0, eos_token_id: int | None = None
) -> Any:
    """A GPT-2-style decoder with a language-model head."""
    from transformers import AutoModelForCausalLM

    if cfg.path:
        _needs(cfg.path, "AutoModelForCausalLM", "causal-LM training (a GPT-style task)")
        return _finish(AutoModelForCausalLM.from_pretrained(cfg.path), cfg, "CAUSAL_LM")
    config = _decoder_config(cfg, vocab_size, pad_token_id, eos_token_id)
    return _finish(AutoModelForCausalLM.from_config(config), cfg)


def masked_lm(cfg: ModelConfig, vocab_size: int, pad_token_id: int = 0) -> Any:
    """A BERT-style encoder (`model.arch`) with a masked-LM head (its encoder is what
    fine-tuning loads)."""
    from transformers import AutoModelForMaskedLM

    if cfg.path:
        _needs(cfg.path, "AutoModelForMaskedLM", "masked-LM pretraining (task: mlm)")
        return _finish(AutoModelForMaskedLM.from_pretrained(cfg.path), cfg)
    config = _encoder_config(cfg, vocab_size, 2, pad_token_id)
    return _finish(AutoModelForMaskedLM.from_config(config), cfg)


EXTRACTIVE = "extractive QA (task: extractive_qa)"


def question_answering(cfg: ModelConfig, vocab_size: int, pad_token_id: int = 0) -> Any:
    """A BERT-style encoder with start/end span heads (pretrained `path`: new heads on it)."""
    from transformers import AutoModelForQuestionAnswering

    from raylm.data.extractive_qa import TOKEN_TYPES  # question, context, marked context

    if cfg.path:
        _needs(cfg.path, "AutoModelForQuestionAnswering", EXTRACTIVE)
        model, fresh = _pretrained(AutoModelForQuestionAnswering, cfg.path)
        grown = _grow_token_types(model, TOKEN_TYPES)
        if grown:  # a LoRA run trains the new rows too
            fresh.append(grown)
        return _finish(model, cfg, "QUESTION_ANS", fresh)
    config = _encoder_config(cfg, vocab_size, 2, pad_token_id)
    config.type_vocab_size = TOKEN_TYPES
    return _finish(AutoModelForQuestionAnswering.from_config(config), cfg)


def _grow_token_types(model: Any, n: int) -> str | None:
    """Give a BERT-style model `n` token types (new rows copy the last one, so an unmarked
    context reads as before); the grown table's module name, or None when it had them already
    or has no token-type table."""
    import torch

    table = getattr(getattr(model.base_model, "embeddings", None), "token_type_embeddings", None)
    if table is None or table.num_embeddings >= n:
        return None
    grown = torch.nn.Embedding(n, table.embedding_dim, dtype=table.weight.dtype)
    with torch.no_grad():
        grown.weight[: table.num_embeddings] = table.weight
        grown.weight[table.num_embeddings :] = table.weight[-1]
    model.base_model.embeddings.token_type_embeddings = grown
    model.config.type_vocab_size = n
    return next(name for name, module in model.named_modules() if module is grown)


def _needs(path: str, auto_class: str, what: str) -> Any:
    """The checkpoint's config, or a one-line error naming its architecture and the task."""
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    mapping = getattr(transformers, auto_class)._model_mapping
    if type(config) not in mapping:
        archs = ", ".join(config.architectures or []) or config.model_type
        raise ValueError(
            f"model.path {path}: a {archs} checkpoint ({config.model_type}) cannot take {what}; "
            f"it needs an architecture {auto_class} knows"
        )
    return config


# Architectures without weights, for counting under the meta device: `from_pretrained` refuses a
# meta-device context, so a pretrained `path` is built from its config alone.
def sequence_classifier_skeleton(
    cfg: ModelConfig, vocab_size: int, num_labels: int = 2, pad_token_id: int = 0
) -> Any:
    if not cfg.path:
        return sequence_classifier(cfg, vocab_size, num_labels, pad_token_id)
    from transformers import AutoModelForSequenceClassification

    config = _needs(cfg.path, "AutoModelForSequenceClassification", "classification")
    config.num_labels = num_labels
    if config.pad_token_id is None:
        config.pad_token_id = pad_token_id
    return AutoModelForSequenceClassification.from_config(config)


def causal_lm_skeleton(cfg: ModelConfig, vocab_size: int, pad_token_id: int = 0) -> Any:
    if not cfg.path:
        return causal_lm(cfg, vocab_size, pad_token_id)
    from transformers import AutoModelForCausalLM

    config = _needs(cfg.path, "AutoModelForCausalLM", "causal-LM training (a GPT-style task)")
    return AutoModelForCausalLM.from_config(config)


def count_parameters(
    model: Any, trainable_only: bool = True, exclude_embeddings: bool = False
) -> int:
    """Parameter count; `exclude_embeddings` drops token/position embedding tables (for FLOPs)."""
    total = 0
    for name, param in model.named_parameters():
        if trainable_only and not param.requires_grad:
            continue
        if exclude_embeddings and (
            "embeddings" in name or name.endswith(("wte.weight", "wpe.weight"))
        ):
            continue
        total += param.numel()
    return total


def question_answering_skeleton(cfg: ModelConfig, vocab_size: int, pad_token_id: int = 0) -> Any:
    if not cfg.path:
        return question_answering(cfg, vocab_size, pad_token_id)
    from transformers import AutoModelForQuestionAnswering

    from raylm.data.extractive_qa import TOKEN_TYPES

    config = _needs(cfg.path, "AutoModelForQuestionAnswering", EXTRACTIVE)
    if hasattr(config, "type_vocab_size"):
        config.type_vocab_size = max(config.type_vocab_size, TOKEN_TYPES)
    return AutoModelForQuestionAnswering.from_config(config)


def masked_lm_skeleton(cfg: ModelConfig, vocab_size: int, pad_token_id: int = 0) -> Any:
    if not cfg.path:
        return masked_lm(cfg, vocab_size, pad_token_id)
    from transformers import AutoModelForMaskedLM

    config = _needs(cfg.path, "AutoModelForMaskedLM", "masked-LM pretraining (task: mlm)")
    return AutoModelForMaskedLM.from_config(config)
