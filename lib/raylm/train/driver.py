"""Training driver: builds Ray Train's TorchTrainer around the per-worker loop and runs it.

    raylm train examples/sentiment_zh.yaml          # after `raylm preprocess` (same run dir)

Runs on an embedded local Ray or a cluster (`run.ray_address`). Relaunching a run with the same
`run.name` resumes from its latest checkpoint: Ray Train V2 reloads the run's checkpoint history
from `<storage_path>/<name>` and hands the latest one to every worker.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from raylm.config import Config, TrainConfig
from raylm.runtime import (
    RunFailedError,
    ensure_ray,
    preflight,
    storage_path,
)
from raylm.tasks import RunSpec, get_task
from raylm.tasks.base import split_examples, train_examples
from raylm.tracking import finish_run, open_run
from raylm.train import elastic
from raylm.train.settings import ParallelConfig


@dataclass
class TrainOutcome:
    best_checkpoint: Any  # ray.train.Checkpoint of the best validation metric
    best_metrics: dict[str, Any]
    latest_metrics: dict[str, Any]
    history: list[dict[str, Any]]


def read_stats(data_dir: Path) -> dict[str, Any]:
    """The preprocessed data's stats.json (FileNotFoundError saying which stage to run)."""
    path = data_dir / "stats.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `raylm preprocess` for this config first")
    return json.loads(path.read_text(encoding="utf-8"))


def _flops_per_token(cfg: Config, vocab_size: int, num_labels: int, pad_id: int) -> float:
    """Model FLOPs per trained token, from a parameter-free build on the meta device."""
    import torch

    from raylm.models.build import count_parameters, resolved_preset
    from raylm.train.flops import flops_per_token

    with torch.device("meta"):
        model = get_task(cfg.model.task).skeleton(cfg.model, vocab_size, num_labels, pad_id)
    n = count_parameters(model, exclude_embeddings=True)
    conf = model.config
    layers = getattr(conf, "num_hidden_layers", None) or resolved_preset(cfg.model).layers
    hidden = getattr(conf, "hidden_size", None) or resolved_preset(cfg.model).hidden
    return flops_per_token(n, layers, hidden, cfg.data.max_length)


def build_spec(cfg: Config, data_dir: Path, stats: dict[str, Any]) -> RunSpec:
    """Everything the workers need besides the config: vocabulary, labels, step counts."""
    from raylm.data.tokenizer import load_tokenizer

    tok = load_tokenizer(str(data_dir / "tokenizer"))
    labels = stats.get("labels") or []
    examples = train_examples(stats)
    replicas = cfg.train.data_parallel  # the workers of one model replica read the same rows
    if cfg.train.elastic:
        replicas = elastic.parts(cfg.train)  # each fixed part needs a row
    if examples < replicas:  # a worker with no batch would wait on the others' collectives
        raise ValueError(
            f"{data_dir}: {examples} training example(s) for {replicas} data-parallel "
            "worker(s); preprocess more data (see stats.json and rejects.jsonl)"
        )
    if split_examples(stats, "validation") == 0:  # validation keeps the best checkpoint
        split = cfg.data.split
        raise ValueError(
            f"{data_dir}: the validation split is empty (data.split.validation "
            f"{split.validation}, salt {split.salt!r}); training validates and keeps its best "
            "checkpoint by it. Raise data.split.validation, or with data.heldout_of choose a "
            "data.split.salt other than the downstream recipes' (with theirs, exactly the texts "
            "they hold out would hash into validation and test)"
        )
    micro = max(1, math.ceil((examples // replicas) / cfg.train.batch_size))
    # Elastic: micro-batches per fixed part, one of each a step (raylm.train.elastic).
    accum = 1 if cfg.train.elastic else cfg.train.grad_accum
    vocab, pad_id, num_labels = len(tok), tok.pad_token_id or 0, max(len(labels), 2)
    return RunSpec(
        task=cfg.model.task,
        vocab_size=vocab,
        pad_id=pad_id,
        eos_id=tok.eos_token_id,
        num_labels=num_labels,
        id2label={i: name for i, name in enumerate(labels)} or None,
        max_length=cfg.data.max_length,
        micro_per_epoch=micro,
        total_steps=max(1, (micro * cfg.train.epochs) // accum),
        flops_per_token=_flops_per_token(cfg, vocab, num_labels, pad_id),
        prompt_template=stats.get("prompt_template") or None,
        mask_id=tok.mask_token_id,
        mask_prob=cfg.data.mlm.mask_prob,
        qa=cfg.data.qa.model_dump() if cfg.model.task == "extractive_qa" else None,
    )


CACHE_MAX_BYTES = 256 * 2**20  # `train.cache_data` default: cache splits smaller than this


def _split_bytes(data_dir: Path, split: str) -> int:
    """Bytes of the files a split is read from: its encoded rows where preprocessing wrote them."""
    folder = data_dir / "encoded" / split
    if not folder.is_dir():
        folder = data_dir / split
    return sum(p.stat().st_size for p in folder.glob("*.parquet"))


def _cached(ds: Any) -> Any:
    """Execute a lazy Dataset once, in order, into the object store (what each epoch reads)."""
    # A Dataset carries its own copy of the DataContext (taken when it was created): ordered
    # execution must be asked of that copy, so every run caches the rows in the same order.
    ds.context.execution_options.preserve_order = True
    return ds.materialize()


def _datasets(cfg: Config, data_dir: Path) -> dict[str, Any]:
    """Ray Datasets of encoded examples for the workers' shards.

    Large splits stay lazy: every epoch streams them from the files (read, tokenize) into the
    workers. Small ones (`train.cache_data`, default: files under 256 MB) are encoded once into
    the object store: re-running the read and tokenize tasks costs every epoch 10-30 s on 2 cores,
    more than a small epoch's compute.
    """
    out = get_task(cfg.model.task).datasets(cfg, data_dir)
    for s in out:
        cache = cfg.train.cache_data
        if cache is None:
            # model parallel: the workers of a replica read the same rows, which only a cached
            # split's in-order cut gives (`_ordered_splits`)
            cache = cfg.train.parallel.model_parallel > 1 or (
                _split_bytes(data_dir, s) < CACHE_MAX_BYTES
            )
        if cache or (cfg.train.elastic and s == elastic.SPLIT):
            out[s] = _cached(out[s])
    if cfg.train.elastic:  # fixed parts, cut in order, that any worker count shares
        cut = out.pop(elastic.SPLIT).split(elastic.parts(cfg.train), equal=True)
        out.update(zip(elastic.part_names(cfg.train), cut, strict=True))
    return out


def _strided(cfg: Config, datasets: dict[str, Any]) -> bool:
    """Whether every rank reads the whole training split and keeps its own rows of each group
    (raylm.train.strided): a split streamed from files, unless `train.streamed_split: dynamic`."""
    from ray.data.dataset import MaterializedDataset

    train = datasets.get(elastic.SPLIT)
    streamed = train is not None and not isinstance(train, MaterializedDataset)
    return streamed and cfg.train.streamed_split == "strided"


def _ordered_splits(parallel: ParallelConfig | None = None) -> type:
    """Ray Train's DataConfig, but a split cached in the object store is cut in order
    (`split(n, equal=True)`): rank r gets the same rows at every launch. Ray's default,
    `streaming_split`, hands blocks to whichever rank asks first: with more than one block, a
    restarted or relaunched run may give a rank other rows than before from the step it resumed
    at. A training split streamed from files is read whole by every rank (`_strided`); other
    streamed splits (validation) keep streaming_split. In a pipeline or tensor-parallel layout
    the split is cut into one part per model replica, and every rank of a replica reads its
    part (`ParallelConfig.data_rank`: DeepSpeed's rank layout)."""
    import ray.train
    from ray.data.dataset import MaterializedDataset

    layout = parallel or ParallelConfig()

    class OrderedSplits(ray.train.DataConfig):
        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            split = self._datasets_to_split
            cached = {
                k: v
                for k, v in datasets.items()
                if isinstance(v, MaterializedDataset) and (split == "all" or k in split)
            }
            streamed = {k: v for k, v in datasets.items() if k not in cached}
            out = super().configure(streamed, world_size, worker_handles, worker_node_ids, **kwargs)
            for name, ds in cached.items():
                ds.set_name(ds.name or name)
                parts = ds.split(world_size // layout.model_parallel, equal=True)
                for rank in range(world_size):
                    out[rank][name] = parts[layout.data_rank(rank, world_size)].iterator()
            return out

    return OrderedSplits


# Read by Ray Train from the driver's environment and handed to its controller.
HEALTH_CHECK_ENV = "RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S"


class StalledWorkerError(RunFailedError):
    """A training worker answered nothing for train.collective_timeout_s: the run was stopped
    instead of hanging with the other ranks blocked on it."""


def watch_for_stalls(train: TrainConfig) -> None:
    """Ray Train's controller polls every worker every 2 s; a poll unanswered this long marks the
    worker dead, and the group fails (or restarts, train.max_failures). A stopped or frozen
    process answers no poll, while its peers wait in a collective that would never return.
    Ray's own default is 600 s; the process group's timeout (NCCL/gloo, for a rank alive but
    stuck in a collective) is set to the same in `make_trainer`."""
    os.environ[HEALTH_CHECK_ENV] = f"{train.collective_timeout_s:g}"


def explain_failure(error: BaseException, train: TrainConfig) -> BaseException:
    """Ray's error for a stalled worker is a health-check timeout with the worker's repr; say
    which rank, process and node stopped answering, and what that means for the run."""
    failures = getattr(error, "worker_failures", None) or {}
    stalled = [
        (rank, str(e))
        for rank, e in sorted(failures.items())
        if type(e).__name__ == "WorkerHealthCheckTimeoutError"
    ]
    if not stalled:
        return error
    who = ", ".join(
        f"rank {rank} (pid {_field(text, 'pid')} on {_field(text, 'node_ip')})"
        for rank, text in stalled
    )
    return StalledWorkerError(
        f"{who} answered nothing for {train.collective_timeout_s:g} s "
        "(train.collective_timeout_s): the process is stopped, frozen or stuck outside Python, "
        "and its peers would wait on it forever; the run was stopped (train.max_failures "
        "restarts it from its last complete checkpoint)"
    )


def raise_explained(error: BaseException, train: TrainConfig) -> NoReturn:
    better = explain_failure(error, train)
    if better is error:
        raise error
    raise better from error


def _field(text: str, name: str) -> str:
    found = re.search(rf"{name}='?([^',\n]+)", text)
    return found.group(1) if found else "?"


def make_trainer(cfg: Config, data_dir: Path, spec: RunSpec, callbacks: list | None = None):
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchConfig, TorchTrainer

    from raylm.train.loop import train_loop_per_worker

    # Ordered, seeded input so a resumed run sees the same batches as an uninterrupted one.
    datasets = _datasets(cfg, data_dir)
    strided = _strided(cfg, datasets)
    # Not split by Ray: an elastic run's parts (each read whole by the one rank that has it) and
    # a strided training split (read whole by every rank, which keeps its own rows).
    whole = elastic.part_names(cfg.train) if cfg.train.elastic else []
    whole += [elastic.SPLIT] if strided else []
    to_split = [k for k in datasets if k not in whole] if whole else "all"
    data_config = _ordered_splits(cfg.train.parallel)(
        datasets_to_split=to_split,
        execution_options=ExecutionOptions(preserve_order=True),
        enable_shard_locality=False,
    )
    workers = cfg.train.num_workers
    if cfg.train.elastic:
        workers = (cfg.train.fewest_workers, cfg.train.num_workers)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "spec": spec, "strided": strided},
        torch_config=TorchConfig(timeout_s=math.ceil(cfg.train.collective_timeout_s)),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            elastic_resize_monitor_interval_s=cfg.train.elastic_resize_s,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={
                "CPU": cfg.train.cpus_per_worker,
                **cfg.train.resources_per_worker,
            },
            placement_strategy=cfg.train.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=cfg.run.name,
            storage_path=storage_path(cfg.run),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints,
                checkpoint_score_attribute=cfg.train.best_metric,
                checkpoint_score_order=cfg.train.best_mode,
            ),
            failure_config=ray.train.FailureConfig(
                max_failures=cfg.train.max_failures,
                # Never relaxed: a preemption checkpoint commits only with every rank's shards.
                max_preemption_failures=cfg.train.max_preemptions,
            ),
            callbacks=callbacks,  # e.g. Tune's TuneReportCallback when a trial drives this run
        ),
        datasets=datasets,
        dataset_config=data_config,
    )


def run_trainer(
    cfg: Config, callbacks: list | None = None, parent_run_id: str | None = None
) -> Any:
    """Build the run's TorchTrainer from its preprocessed data and fit it (on the connected Ray,
    else a new embedded one); returns Ray Train's Result. `callbacks` join the RunConfig (Tune
    passes its TuneReportCallback, and its sweep's MLflow run as `parent_run_id`)."""
    data_dir = cfg.run.data_path.resolve()
    spec = build_spec(cfg, data_dir, read_stats(data_dir))  # fails fast, before Ray starts
    spec = replace(spec, tracking=open_run(cfg, parent_run_id))
    try:
        result = _fit_trainer(cfg, data_dir, spec, callbacks)
    except KeyboardInterrupt:
        finish_run(cfg, "KILLED")
        raise
    except BaseException:
        finish_run(cfg, "FAILED")
        raise
    finish_run(cfg, "FAILED" if result.error else "FINISHED")
    return result


def _fit_trainer(cfg: Config, data_dir: Path, spec: RunSpec, callbacks: list | None) -> Any:
    ensure_ray(cfg.run)
    preflight(cfg.train)
    workers = cfg.train.num_workers
    if cfg.train.elastic:
        workers = f"{cfg.train.fewest_workers}-{workers} (elastic)"
    print(
        f"[raylm] training {cfg.model.task} on {workers} worker(s), "
        f"ZeRO-{cfg.train.zero_stage} {cfg.train.precision}, {spec.total_steps} steps "
        f"({spec.micro_per_epoch} micro-batches/epoch/"
        f"{'part' if cfg.train.elastic else 'worker'})",
        flush=True,
    )
    watch_for_stalls(cfg.train)
    try:
        return make_trainer(cfg, data_dir, spec, callbacks).fit()
    except Exception as err:  # Ray Train V2 raises a failed run's error from fit()
        raise_explained(err, cfg.train)


def fit(cfg: Config) -> TrainOutcome:
    """Train (or resume) the run; returns where its best checkpoint is and its metrics."""
    from raylm.train.checkpoint import read_state

    result = run_trainer(cfg)
    if result.error:
        raise_explained(result.error, cfg.train)
    best = (
        result.get_best_checkpoint(cfg.train.best_metric, cfg.train.best_mode) or result.checkpoint
    )
    if best is None:
        raise RuntimeError(f"run {cfg.run.name} produced no checkpoint")
    best_metrics = next(
        (m for c, m in result.best_checkpoints or [] if c.path == best.path), result.metrics or {}
    )
    with result.checkpoint.as_directory() as latest:
        history = read_state(latest)["history"]
    return TrainOutcome(best, best_metrics, dict(result.metrics or {}), history)
