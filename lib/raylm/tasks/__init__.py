"""The task table: one module per task, looked up by `model.task`.

    task = get_task(cfg.model.task)
    stats = task.preprocess(cfg, data_dir); model = task.build_model(cfg.model, vocab_size)

Every stage, the training loop, the model builder and Serve call the task's functions instead of
branching on its name. Adding a task: write `raylm/tasks/<name>.py` building a `Task` (see
base.py and docs/architecture.md), add it to TASKS below and to `raylm.config.Task`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylm.tasks import causal_lm, classification, extractive_qa, mlm, qa
from raylm.tasks.base import RunSpec, Task

if TYPE_CHECKING:
    from raylm.config import ModelConfig

TASKS: dict[str, Task] = {
    t.name: t for t in (classification.TASK, causal_lm.TASK, qa.TASK, mlm.TASK, extractive_qa.TASK)
}

__all__ = ["TASKS", "RunSpec", "Task", "build_model", "get_task", "task_of_model_dir"]


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})") from None


def build_model(
    model: ModelConfig,
    vocab_size: int,
    num_labels: int = 2,
    pad_token_id: int = 0,
    eos_token_id: int | None = None,
    id2label: dict[int, str] | None = None,
) -> Any:
    """The `transformers` model of `model.task` (fresh from a preset, or from `model.path`)."""
    task = get_task(model.task)
    return task.build_model(model, vocab_size, num_labels, pad_token_id, eos_token_id, id2label)


def task_of_model_dir(path: str | Path) -> str:
    """The task of an exported model folder: its raylm.json, else guessed from the HF config
    (a folder raylm did not write): a sequence classifier or else a causal LM."""
    from raylm.models.export import read_model_meta

    task = read_model_meta(path).get("task")
    if task:
        return task
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    archs = config.get("architectures") or []
    if any("Classification" in a for a in archs):
        return classification.TASK.name
    if any("QuestionAnswering" in a for a in archs):
        return extractive_qa.TASK.name
    if any("MaskedLM" in a for a in archs):
        return mlm.TASK.name
    return causal_lm.TASK.name
