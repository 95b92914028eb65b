"""Checkpoint layout: one folder per `ray.train.report`.

    ds/         every rank's DeepSpeed shards: model, optimizer, scheduler (resume)
    hf/         rank 0's consolidated model in Hugging Face format, safetensors (the exported
                model folder's layout, `raylm.models.export`, without the tokenizer)
    state.json  the loop state: epoch, step, micro-batches consumed, metric history

`raylm.models.export.export_model(checkpoint_dir, tokenizer_dir, out_dir)` turns `hf/` plus the
tokenizer into `<run>/model`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint_dir) / "state.json").read_text(encoding="utf-8"))
