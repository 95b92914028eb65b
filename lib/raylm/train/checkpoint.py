"""Checkpoint layout and export.

A checkpoint folder (one per `ray.train.report`) holds:
    ds/         every rank's DeepSpeed shards: model, optimizer, scheduler (resume)
    hf/         rank 0's consolidated model in Hugging Face format, safetensors (export)
    state.json  the loop state: epoch, step, micro-batches consumed, metric history

`export_model(checkpoint_dir, run_dir)` copies `hf/` plus the tokenizer into `<run>/model`, a folder
that plain `transformers` loads with `from_pretrained`; nothing in it needs unpickling.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

RAYLM_META = "raylm.json"


def write_hf_model(
    module: Any, state_dict: dict | None, out_dir: Path, meta: dict[str, Any]
) -> None:
    """Save the model as safetensors + config (rank 0 only), with raylm's own metadata beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(str(out_dir), state_dict=state_dict, safe_serialization=True)
    keys = ("task", "id2label", "max_length", "prompt_template")
    (out_dir / RAYLM_META).write_text(
        json.dumps({k: meta[k] for k in keys if k in meta}, ensure_ascii=False, indent=2),
        encoding="utf-8",
    )


def read_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint_dir) / "state.json").read_text(encoding="utf-8"))


def export_model(
    checkpoint_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path
) -> Path:
    """Write `out_dir` = the checkpoint's HF model + tokenizer, replacing it atomically."""
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
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def read_model_meta(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / RAYLM_META
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
