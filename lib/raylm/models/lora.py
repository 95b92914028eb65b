"""LoRA adapters through `peft`: wrap a freshly built model, check the layer names a recipe
asks for, and load an exported adapter folder back onto its base.

    model = add_lora(model, cfg.model.lora, "SEQ_CLS")   # models.build does this for `lora`
    model = load_adapter(folder, AutoModelForSequenceClassification)  # merged, for inference

Only the adapter matrices and the task head (peft's `modules_to_save`, e.g. a classifier) train;
every other weight stays frozen, so checkpoints hold just those (`train.deepspeed.Engine`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raylm.config import LoraConfig

ADAPTER_CONFIG = "adapter_config.json"
# Layers to adapt when the recipe names none, for architectures raylm builds whose defaults peft
# lacks (peft picks for the others): BERT's choice, the attention's query and value.
DEFAULT_TARGETS = {"roformer": ["query", "value"]}


def is_adapter(folder: str | Path) -> bool:
    """Whether a model folder holds a LoRA adapter (loaded on top of its base) rather than a
    whole model."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def layer_names(model: Any) -> list[str]:
    """Distinct last name components of the model's linear layers: what target_modules picks."""
    import torch

    linear = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

        linear += (Conv1D,)
    except ImportError:  # pragma: no cover
        pass
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, linear)})


def unknown_targets(model: Any, targets: list[str] | None) -> list[str]:
    """The names in `targets` that match no module (peft matches a whole name or a suffix
    after a dot, e.g. `value` or `attention.self.value`)."""
    names = [n for n, _ in model.named_modules()]
    return [t for t in targets or [] if not any(n == t or n.endswith(f".{t}") for n in names)]


def target_problem(model: Any, targets: list[str] | None, name: str) -> str | None:
    """The one-line error for `model.lora.target_modules` names that match no layer of
    `model` (called `name` in the message), or None when all match."""
    unknown = unknown_targets(model, targets)
    if not unknown:
        return None
    return (
        f"model.lora.target_modules: {', '.join(unknown)} names no layer of {name}; its linear "
        f"layers: {', '.join(layer_names(model))}"
    )


def add_lora(
    model: Any, lora: LoraConfig, peft_task: str | None, fresh: list[str] | None = None
) -> Any:
    """The model wrapped in LoRA adapters (a peft `PeftModel`); `peft_task` (SEQ_CLS,
    CAUSAL_LM, or None) makes peft train the task head as well, and so do the `fresh` layers
    (initialised at random, not from the checkpoint: frozen, they would stay noise, and be
    drawn anew at every load)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    problem = target_problem(model, lora.target_modules, f"this {type(model).__name__}")
    if problem:
        raise ValueError(problem)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules or DEFAULT_TARGETS.get(model_type),
        task_type=peft_task,
        modules_to_save=fresh or None,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # e.g. no default target modules for this architecture
        raise ValueError(f"model.lora: {err}") from err


# The auto class an adapter's base loads with, by the peft task it was trained for.
AUTO_CLASS_OF_PEFT_TASK = {
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "CAUSAL_LM": "AutoModelForCausalLM",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    None: "AutoModelForMaskedLM",  # raylm's only task without a peft task type (mlm)
}


def _adapter_config(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / ADAPTER_CONFIG).read_text(encoding="utf-8"))


def adapter_auto_class(folder: str | Path) -> str:
    return AUTO_CLASS_OF_PEFT_TASK.get(_adapter_config(folder).get("task_type"), "AutoModel")


def adapter_base(folder: str | Path) -> str:
    """The folder or model id the adapter was trained on (`model.path` of its run)."""
    return _adapter_config(folder)["base_model_name_or_path"]


def load_adapter(folder: str | Path, auto_class: Any, **base_kwargs: Any) -> Any:
    """An exported adapter folder as one plain model: its base (`base_model_name_or_path` in
    adapter_config.json) loaded with `base_kwargs`, the adapter merged into it."""
    from peft import PeftModel

    base = auto_class.from_pretrained(adapter_base(folder), **base_kwargs)
    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
