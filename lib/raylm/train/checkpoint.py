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


def checkpoint_root(run_dir: str | Path) -> Path:
    """Where a run's checkpoints are: `run.storage_path` of its recorded config, else
    `<run>/ray`, then the run's name."""
    import yaml

    run_dir = Path(run_dir)
    record = run_dir / "config.yaml"
    cfg = yaml.safe_load(record.read_text(encoding="utf-8")) if record.is_file() else {}
    run = (cfg or {}).get("run") or {}
    storage = run.get("storage_path") or str(run_dir / "ray")
    if "://" in storage:
        raise ValueError(f"{run_dir}: checkpoints are in {storage}; list them there")
    return Path(storage) / (run.get("name") or run_dir.name)


def list_checkpoints(run_dir: str | Path) -> list[dict[str, Any]]:
    """Each checkpoint of a run, oldest first: folder, step, state (complete / incomplete /
    corrupt, see raylm.train.manifest), what is wrong, and its validation metrics."""
    from raylm.train.manifest import check_checkpoint

    root = checkpoint_root(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no checkpoints (has `raylm train` run for {run_dir}?)")
    rows = []
    for folder in sorted(root.glob("checkpoint_step*")):
        check = check_checkpoint(folder)
        row: dict[str, Any] = {"checkpoint": folder.name, "step": None, "state": check.state}
        row["detail"], row["metrics"] = check.detail, {}
        try:
            state = read_state(folder)
        except (OSError, ValueError):  # missing or damaged: the check above says which
            state = None
        if state:
            row["step"] = state["step"]
            evals = [h for h in state["history"] if h.get("step") == state["step"]]
            row["metrics"] = {k: v for h in evals for k, v in h.items() if k.startswith("val_")}
        rows.append(row)
    return rows
