"""Loading a recipe: YAML -> dotted overrides -> schema -> the task's defaults and rules.

    cfg = load_config("examples/sentiment_zh.yaml", overrides=["train.lr=3e-4"])
    cfg = config_from_dict(raw_mapping, source="trial 3")

A bad file or field raises `ConfigError` whose message names the file, the field and what was
expected, before any work starts. The schema is `raylm.config`; what depends on `model.task`
(its default best metric, fields it needs or ignores) is the task module's (`raylm.tasks`).
No Ray, torch or DeepSpeed import.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from raylm.config import Config, ModelConfig, parse_config
from raylm.configkit import ConfigError, apply_overrides, problems_error, read_yaml
from raylm.tasks import TASKS

__all__ = ["ConfigError", "apply_overrides", "config_from_dict", "load_config", "warnings_of"]


def _task_defaults(data: dict[str, Any]) -> None:
    """The task's best metric when the recipe names none (language models have no F1)."""
    model, train = data.get("model"), data.get("train")
    default = ModelConfig.model_fields["task"].default
    name = model.get("task", default) if isinstance(model, dict) else None
    task = TASKS.get(name) if isinstance(name, str) else None
    if task is None:  # not a mapping, or not a task's name (maybe not hashable): the schema says
        return
    if train is None or (isinstance(train, dict) and "best_metric" not in train):
        # A copy: the caller's mapping (e.g. Tune's base for every trial) stays as it was. A
        # best_mode the recipe sets is kept (`--set train.best_mode=min` alone is not lost).
        metric, mode = task.best_metric
        data["train"] = {"best_mode": mode, **(train or {}), "best_metric": metric}


def warnings_of(cfg: Config) -> list[str]:
    """Settings that are legal but do nothing (shown on stderr at load)."""
    out = []
    if cfg.model.path is not None and "preset" in cfg.model.model_fields_set:
        out.append(f"model.preset '{cfg.model.preset}' is ignored: model.path decides the size")
    return out


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a raw recipe mapping: schema, then the task's defaults and rules."""
    data = dict(data)
    _task_defaults(data)
    cfg = parse_config(data, source)
    problems = TASKS[cfg.model.task].check_config(cfg)
    if cfg.train.head_lr is not None and cfg.model.path is None:
        problems.append(
            "train.head_lr: applies to the head put on a pretrained model; set model.path "
            "(a model trained from scratch is all new: train.lr)"
        )
    if problems:
        raise problems_error(problems, source)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe, apply overrides, validate. Raises ConfigError naming file and field."""
    data = apply_overrides(read_yaml(path), overrides or [])
    cfg = config_from_dict(data, source=str(path))
    for warning in warnings_of(cfg):
        print(f"{path}: warning: {warning}", file=sys.stderr, flush=True)
    return cfg
