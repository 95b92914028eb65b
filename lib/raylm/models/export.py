"""The exported model folder: what `raylm export` writes and eval, Serve and users read.

    <run>/model/  config.json + model.safetensors   plain `transformers` `from_pretrained`
                  tokenizer files                   `AutoTokenizer.from_pretrained`
                  raylm.json                        task, labels, max_length, prompt template

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

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def write_hf_model(module: Any, state_dict: dict | None, out_dir: Path, meta: ModelMeta) -> None:
    """Save the model as safetensors + config (rank 0 only), with raylm's own metadata beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(str(out_dir), state_dict=state_dict, safe_serialization=True)
    (out_dir / RAYLM_META).write_text(
        json.dumps(meta.to_json(), ensure_ascii=False, indent=2), encoding="utf-8"
    )


def read_model_meta(model_dir: str | Path) -> dict[str, Any]:
    """The folder's raylm.json as a mapping (empty for a folder raylm did not write)."""
    path = Path(model_dir) / RAYLM_META
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def export_model(
    checkpoint_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path
) -> Path:
    """Write `out_dir` = the checkpoint's `hf/` model + the tokenizer, replacing it atomically."""
    src = Path(checkpoint_dir) / "hf"
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint_dir}: no exported model (hf/config.json) inside")
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    for f in Path(tokenizer_dir).iterdir():
        if f.is_file():
            shutil.copy2(f, tmp / f.name)
    # Swap in only once the new folder is complete, so a failure never leaves a half model.
    return replace_folder(tmp, out)
