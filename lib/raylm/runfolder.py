"""A run folder's record of its config, and the rule that a relaunch never destroys a run.

    record_config(cfg, run_dir)   # before a stage writes anything into the run folder

Relaunching a run name resumes it, so the recorded `config.yaml` says what the folder holds. A
relaunch whose `data` or `model` sections differ (another tokenizer, model size, task, corpus)
would mix runs: its preprocessing would replace the data the checkpoints were trained on, and
resuming would load weights into another model. It is refused before anything is written, naming
each field. Other changes (`train.epochs`, `run.num_cpus`, ...) are allowed and appended to
`config_changes.jsonl` beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from raylm.config import Config, dump_config, parse_config
from raylm.configkit import ConfigError

RECORD = "config.yaml"
CHANGES = "config_changes.jsonl"
SHAPING = ("data", "model")  # sections that decide what the folder's data and weights are
COMPATIBLE = {"model.gradient_checkpointing"}  # compute only: the same weights either way


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted field -> value of a nested mapping (`{"train": {"lr": 1}}` -> `{"train.lr": 1}`)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _as_current(recorded: dict[str, Any]) -> dict[str, Any]:
    """The recorded config as this raylm reads it: a field added since it was written takes its
    default there (it did not exist, so the run was made with what the default does), instead of
    counting as a change. A record this schema refuses is compared as written."""
    try:
        return parse_config(recorded, source=RECORD).model_dump(mode="json")
    except (ConfigError, ValueError, TypeError):
        return recorded


def differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted field -> (old, new) for every field whose value differs."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def record_config(cfg: Config, run_dir: Path) -> None:
    """Write `cfg` as the run's config.yaml, refusing a relaunch that would mix two runs."""
    path = run_dir / RECORD
    new = cfg.model_dump(mode="json")
    if path.is_file():
        old = _as_current(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        diff = differences(old, new)
        shaping = {
            k: v for k, v in diff.items() if k.split(".")[0] in SHAPING and k not in COMPATIBLE
        }
        if shaping:
            lines = [f"  - {k}: {o!r} recorded, {n!r} now" for k, (o, n) in shaping.items()]
            raise ConfigError(
                f"run '{cfg.run.name}' in {run_dir} was made with another config; relaunching it "
                "would mix two runs (its data and checkpoints belong to the recorded one):\n"
                + "\n".join(lines)
                + "\nUse another run.name (--name), or remove the folder to start over."
            )
        if diff:
            entry = {
                "time": round(time.time(), 3),
                "changes": {k: list(v) for k, v in diff.items()},
            }
            with (run_dir / CHANGES).open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, path)
