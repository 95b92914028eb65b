"""The task protocol: what every task module provides, and the run description it is given.

A task is a `Task` record of plain functions (no base class to inherit): the stages, the
training loop, the model builder and Serve look the task up by name (`raylm.tasks.get_task`) and
call these instead of branching on the name. Heavy imports (Ray, torch, transformers) happen
inside the functions, so loading a recipe stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from raylm.console import say as say  # the tasks' console line (re-exported)

if TYPE_CHECKING:
    from raylm.config import Config


class Evaluator(Protocol):
    """Validation scoring inside the loop (see raylm.eval.evaluators)."""

    def update(self, out: Any, batch: dict[str, Any]) -> None: ...
    def tensors(self) -> list[Any]: ...
    def metrics(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class RunSpec:
    """Everything the workers need besides the config, worked out once by the driver from the
    preprocessed data: vocabulary, labels, step counts, FLOPs per token."""

    task: str
    vocab_size: int
    pad_id: int
    eos_id: int | None
    num_labels: int
    id2label: dict[int, str] | None
    max_length: int
    micro_per_epoch: int  # micro-batches per epoch on each worker (elastic: on each part)
    total_steps: int  # optimizer steps of the whole schedule
    flops_per_token: float = 0.0
    prompt_template: str | None = None
    mask_id: int | None = None  # [MASK], for masked-LM tasks
    mask_prob: float = 0.15
    qa: dict[str, Any] | None = None  # extractive QA: data.qa (windows), kept in raylm.json
    tracking: Any = None  # raylm.tracking.TrackingTarget: where rank 0 logs (None: nowhere)


@dataclass(frozen=True)
class Task:
    """One task's pieces. Adding a task = one module building one of these + one registry line."""

    name: str
    description: str
    best_metric: tuple[str, Literal["max", "min"]]  # default train.best_metric / best_mode
    # Config rules of this task: problems as "field: message" lines (empty list: fine).
    check_config: Callable[[Config], list[str]]
    # preprocess(cfg, data_dir) -> stats.json mapping (splits, rejects, tokenizer, encoded rows)
    preprocess: Callable[[Config, Path], dict[str, Any]]
    # datasets(cfg, data_dir) -> {"train": Dataset, "validation": Dataset} of encoded rows (lazy)
    datasets: Callable[[Config, Path], dict[str, Any]]
    # collate(numpy_batch, spec, seed) -> model inputs as tensors (raylm.data.collate); the
    # seed (train.seed + epoch; train.seed for validation) draws masked-LM masks
    collate: Callable[[dict[str, Any], RunSpec, int], dict[str, Any]]
    evaluator: Callable[[RunSpec], Evaluator]
    # build_model(model_cfg, vocab_size, num_labels, pad_id, eos_id, id2label) -> HF model
    build_model: Callable[..., Any]
    # skeleton(model_cfg, vocab_size, num_labels, pad_id) -> the model without weights (FLOPs)
    skeleton: Callable[..., Any]
    # evaluate(cfg, run_dir, data_dir) -> metrics.json mapping of the exported model on test
    evaluate: Callable[[Config, Path, Path], dict[str, Any]]
    serve_with: Literal["classifier", "generator", "extractor"] | None  # Serve deployment, if any
    endpoints: frozenset[str]  # Serve endpoints it answers: classify, complete, qa
    # What `raylm predict` makes of each input row (raylm.predict.RowPredictor), if anything:
    # a label of a text, a completion of a text, a generated or an extracted answer.
    predicts: Literal["classify", "complete", "answer", "extract"] | None
    # Its labels are mostly -100 (only answer tokens or masked tokens train): the loss runs the
    # output projection on the labelled positions alone (raylm.train.lm_loss).
    labelled_loss: bool = False


def train_examples(stats: dict[str, Any]) -> int:
    """Examples in the train split, from stats.json: the encoded examples (packed blocks, QA
    features) where preprocessing encoded them, else the split's rows (encoded on the fly)."""
    return split_examples(stats, "train")


def split_examples(stats: dict[str, Any], split: str) -> int | None:
    """Examples in `split` as `train_examples` counts them; None where stats.json has no count."""
    encoded = stats.get("encoded", {}).get(split)
    return encoded["examples"] if encoded else stats["splits"].get(split)


def ignored_fields(section: Any, names: tuple[str, ...], prefix: str, why: str) -> list[str]:
    """Problems for the fields of `section` among `names` that the task ignores but the recipe
    sets to something other than their default (a dumped config, all defaults written out,
    passes)."""
    out = []
    for name in names:
        field = type(section).model_fields[name]
        default = field.default_factory() if field.default_factory else field.default
        if getattr(section, name) != default:
            out.append(f"{prefix}.{name}: ignored by this task: {why}")
    return out
