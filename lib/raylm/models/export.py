"""The exported model folder: what `raylm export` writes and eval, Serve and users read.

    <run>/model/  config.json + model.safetensors   plain `transformers` `from_pretrained`
                  tokenizer files                   `AutoTokenizer.from_pretrained`
                  raylm.json                        task, labels, max_length, prompt template,
                                                    preprocess (cleaning, for raylm predict)

Nothing in it needs unpickling. Each checkpoint carries the same folder as `hf/` (without the
tokenizer); `export_model` copies the best one's into place atomically.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raylm.fsutil import replace_folder

RAYLM_META = "raylm.json"


@dataclass(frozen=True)
class ModelMeta:
    """raylm's own facts about an exported model (`raylm.json`)."""

    task: str
    max_length: int
    id2label: dict[int, str] | None = None
    prompt_template: str | None = None
    qa: dict[str, Any] | None = None  # extractive QA's window settings (data.qa)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def write_hf_model(module: Any, state_dict: dict | None, out_dir: Path, meta: ModelMeta) -> None:
    """Save the model as safetensors + config (rank 0 only), with raylm's own metadata beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(str(out_dir), state_dict=state_dict, safe_serialization=True)
    (out_dir / RAYLM_META).write_text(
        json.dumps(meta.to_json(), ensure_ascii=False, indent=2), encoding="utf-8"
    )


def is_model_folder(folder: str | Path) -> bool:
    """An exported model: a whole one (config.json) or a LoRA adapter on its base."""
    folder = Path(folder)
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def read_model_meta(model_dir: str | Path) -> dict[str, Any]:
    """The folder's raylm.json as a mapping (empty for a folder raylm did not write)."""
    path = Path(model_dir) / RAYLM_META
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def add_model_meta(model_dir: str | Path, **facts: Any) -> None:
    """Add `facts` to the folder's raylm.json (rewritten whole, atomically)."""
    from raylm.fsutil import write_atomic

    meta = {**read_model_meta(model_dir), **facts}
    write_atomic(Path(model_dir) / RAYLM_META, json.dumps(meta, ensure_ascii=False, indent=2))


def export_model(
    checkpoint_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, merge: bool = True
) -> Path:
    """Write `out_dir` = the checkpoint's `hf/` model + the tokenizer, replacing it atomically.
    A LoRA checkpoint's adapter is merged into its base (`merge`), or exported alone (it then
    loads on top of the base named in its adapter_config.json, see `load_model`)."""
    from raylm.models.lora import ADAPTER_CONFIG, is_adapter

    src = Path(checkpoint_dir) / "hf"
    if not is_model_folder(src):
        raise FileNotFoundError(f"{checkpoint_dir}: no exported model (hf/config.json) inside")
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    for f in Path(tokenizer_dir).iterdir():
        if f.is_file():
            shutil.copy2(f, tmp / f.name)
    if merge and is_adapter(tmp):
        merged = load_model(tmp)
        for f in (ADAPTER_CONFIG, "adapter_model.safetensors"):
            (tmp / f).unlink()
        merged.save_pretrained(str(tmp), safe_serialization=True)
    # Swap in only once the new folder is complete, so a failure never leaves a half model.
    return replace_folder(tmp, out)


def load_model(folder: str | Path, auto_class: str | None = None) -> Any:
    """An exported folder as a `transformers` model: a whole model through `auto_class`
    (e.g. "AutoModelForSequenceClassification"), or a LoRA adapter merged into its base
    (the class then follows the adapter's task when not given). Weights load from safetensors."""
    import transformers

    from raylm.models.lora import adapter_auto_class, adapter_base, is_adapter, load_adapter

    if not is_adapter(folder):
        return getattr(transformers, auto_class or "AutoModel").from_pretrained(str(folder))
    name = auto_class or adapter_auto_class(folder)
    kwargs: dict[str, Any] = {}
    if name == "AutoModelForSequenceClassification":
        # The base has no head of this run's labels: build it with them (and a pad id for
        # decoders that pool at the last non-pad token), then the adapter's head loads into it.
        from raylm.models.build import label_maps

        id2label = {int(k): v for k, v in (read_model_meta(folder).get("id2label") or {}).items()}
        kwargs.update(label_maps(id2label))
        if id2label:
            kwargs["num_labels"] = len(id2label)
        base = transformers.AutoConfig.from_pretrained(adapter_base(folder))
        if base.pad_token_id is None:
            kwargs["pad_token_id"] = transformers.AutoTokenizer.from_pretrained(
                str(folder)
            ).pad_token_id
    return load_adapter(folder, getattr(transformers, name), **kwargs)
