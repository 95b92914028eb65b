"""The per-worker step loop that Ray Train's TorchTrainer runs on every worker.

Not called directly: `raylm.train.driver.fit` hands `train_loop_per_worker` to TorchTrainer.
`train_step` is the one training step: the loop, the benchmarks and the profiler all call it.
What differs by task (collate, validation scoring, the model) comes from the task table.
Per-step metrics go to the rank-0 console and Ray's metrics (Prometheus); `ray.train.report`
is called only at evaluation/checkpoint boundaries because each report waits for the Train
controller's poll (docs/architecture.md, facts checked).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from raylm.config import Config, TrainConfig, parse_config
from raylm.data.collate import count_tokens
from raylm.runtime import configure_ray_data
from raylm.tasks import RunSpec, get_task
from raylm.tracking import Tracker
from raylm.train import elastic, preemption
from raylm.train.flops import mfu
from raylm.train.ledger import IDS_KEY, Ledger, example_ids
from raylm.train.manifest import write_manifest
from raylm.train.resume import LoopState, restore, rng_state, say
from raylm.train.resume import rank as _rank
from raylm.train.resume import world as _world
from raylm.train.strided import strided_batches


def _all_reduce(tensors: list[torch.Tensor]) -> None:
    """Sum tensors across workers in place (via the accelerator when the backend is NCCL)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    on_gpu = dist.get_backend() == "nccl"
    for t in tensors:
        buf = t.cuda() if on_gpu else t
        dist.all_reduce(buf)
        if on_gpu:
            t.copy_(buf.cpu())


class Meter:
    """Throughput and loss since the last log line, summed over all workers.

    `add` makes no per-step host sync on GPUs (sums stay on the device until `read`, once per
    log interval); `exclude` takes validation/checkpoint time out of the interval, so the first
    interval after a validation reports training throughput, not the pause."""

    def __init__(self, flops_token: float, peak_total: float, copies: int = 1):
        self.flops_token, self.peak_total = flops_token, peak_total
        self.copies = copies  # ranks that see the same micro-batch (pipeline x tensor parallel)
        self.reset()
        self.gauges = _gauges() if _rank() == 0 else None

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.loss_sum: torch.Tensor | float = 0.0
        self.tokens: torch.Tensor | int = 0
        self.n = self.samples = 0

    def add(self, loss: torch.Tensor | None, samples: int, tokens: torch.Tensor | int) -> None:
        """One micro-batch; `loss` None when it is not known yet (a pipeline reports the mean
        of its micro-batches with the last of them)."""
        on_cpu = not isinstance(tokens, torch.Tensor) or tokens.device.type == "cpu"
        if on_cpu:  # nothing to sync on CPU; Python numbers add fastest
            self.tokens += int(tokens)
        else:  # stay on the device: a host sync per step would stall the GPU's queue
            self.tokens = self.tokens + tokens
        self.samples += samples
        if loss is None:
            return
        if loss.device.type == "cpu":
            self.loss_sum += loss.item()
        else:
            self.loss_sum = self.loss_sum + loss.detach().to(torch.float64)
        self.n += 1

    def exclude(self, seconds: float) -> None:
        self.t0 += seconds

    def read(self) -> dict[str, float]:
        loss_sum, tokens = (float(x) for x in (self.loss_sum, self.tokens))
        sums = torch.tensor([loss_sum, self.n, self.samples, tokens], dtype=torch.float64)
        _all_reduce([sums])
        dt = max(time.perf_counter() - self.t0, 1e-9)
        loss_sum, n, samples, tokens = sums.tolist()
        samples, tokens = samples / self.copies, tokens / self.copies
        tps = tokens / dt
        row = {
            "train_loss": loss_sum / max(n, 1),
            "samples_per_s": samples / dt,
            "tokens_per_s": tps,
            "mfu": mfu(tps, self.flops_token, self.peak_total),
        }
        if self.gauges:
            for name, gauge in self.gauges.items():
                gauge.set(row[name])
        self.reset()
        return row


def _gauges() -> dict[str, Any] | None:
    try:
        from ray.util.metrics import Gauge
    except ImportError:  # pragma: no cover
        return None
    names = {
        "tokens_per_s": "tokens per second",
        "samples_per_s": "samples per second",
        "mfu": "model FLOPs utilisation (0-1)",
        "train_loss": "training loss",
    }
    return {k: Gauge(f"raylm_train_{k}", description=d) for k, d in names.items()}


def batches(
    shard: Any,
    train: TrainConfig,
    collate: Any,
    epoch: int,
    spec: RunSpec,
    shuffle: bool,
    ids: bool = False,
    stride: tuple[int, int] | None = None,
):
    """A Ray Data shard as collated torch batches; shuffled (and, for masked LM, masked) by a
    seed of the epoch. `ids`: each batch also carries its rows' ledger ids under IDS_KEY.
    `stride` (rank, ranks): the shard is a whole split streamed from files, of which this rank
    takes its own rows of each group (raylm.train.strided)."""
    seeded = shuffle and train.shuffle_buffer

    def collate_fn(b: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = collate(b, spec, train.seed + epoch)
        if ids:
            out[IDS_KEY] = torch.from_numpy(example_ids(b).view(np.int64))
        return out

    if stride is not None:
        return strided_batches(
            shard, *stride, train.batch_size, collate_fn,
            shuffle_buffer=train.shuffle_buffer if shuffle else None,
            seed=train.seed + epoch,
        )  # fmt: skip
    return shard.iter_torch_batches(
        batch_size=train.batch_size,
        collate_fn=collate_fn,
        local_shuffle_buffer_size=train.shuffle_buffer or None if shuffle else None,
        local_shuffle_seed=train.seed + epoch if seeded else None,
        drop_last=False,
    )


def train_step(engine: Any, meter: Meter, batch: dict[str, torch.Tensor]) -> bool:
    """One micro-batch: onto the device, forward + backward, into the meter, and the optimizer
    step at the accumulation boundary. True when an optimizer step was taken."""
    batch = {k: v.to(engine.device) for k, v in batch.items()}
    loss = engine.forward_backward(batch)
    meter.add(loss, len(batch["input_ids"]), count_tokens(batch))
    return engine.step()


@torch.no_grad()
def evaluate(engine: Any, shard: Any, cfg: Config, spec: RunSpec) -> dict[str, float]:
    task = get_task(spec.task)
    evaluator = task.evaluator(spec)
    engine.train_mode(False)
    for batch in batches(shard, cfg.train, task.collate, 0, spec, shuffle=False):
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        evaluator.update(engine.forward(batch), batch)
    engine.train_mode(True)
    _all_reduce(evaluator.tensors())
    return evaluator.metrics()


def model_meta(spec: RunSpec):
    """What the exported folder's raylm.json records about the model."""
    from raylm.models.export import ModelMeta

    return ModelMeta(spec.task, spec.max_length, spec.id2label, spec.prompt_template, spec.qa)


def _save_and_report(
    engine: Any, state: LoopState, metrics: dict[str, Any], spec: RunSpec, ledger: Ledger
) -> None:
    import ray.train

    state_dict = engine.full_state_dict()  # every rank: ZeRO-3 gathers here
    with tempfile.TemporaryDirectory() as tmp:
        engine.save(tmp, client_state={"loop": asdict(state)})
        # Each rank's own RNG streams: DeepSpeed keeps client_state in rank 0's file only, and
        # rank 1 resumed with rank 0's dropout masks (losses off by 3e-4 after a resume).
        torch.save(rng_state(), Path(tmp) / f"rng_rank{_rank()}.pt")
        if _rank() == 0:
            from raylm.models.export import write_hf_model

            write_hf_model(engine.module, state_dict, Path(tmp) / "hf", model_meta(spec))
            (Path(tmp) / "state.json").write_text(json.dumps(asdict(state)))
        ledger.save(tmp, _rank())  # which examples this rank has trained on, this epoch
        write_manifest(tmp, _rank(), _world())  # last: this rank's part is whole
        suffix = f"_f{state.fallbacks}" if state.fallbacks else ""
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_step{state.step:07d}{suffix}",
        )


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: the run stops instead of training on."""


def _log(
    cfg: Config, state: LoopState, meter: Meter, engine: Any, total: int, tracker: Any
) -> None:
    row = meter.read()  # all-reduced: every rank sees a non-finite loss of any rank's
    if not math.isfinite(row["train_loss"]):
        first = max(1, state.step - cfg.train.log_every + 1)
        raise NonFiniteLossError(
            f"training loss is {row['train_loss']} over steps {first}-{state.step} "
            f"(lr {engine.lr:.3g}); lower train.lr, or set train.max_grad_norm"
        )
    row.update(step=state.step, epoch=state.epoch + 1, lr=engine.lr)
    state.history.append({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
    if tracker is not None:
        tracker.log(state.step, row)
    if _rank() == 0:
        say(
            f"epoch {row['epoch']}/{cfg.train.epochs} step {state.step}/{total} "
            f"loss {row['train_loss']:.4f} lr {row['lr']:.2e} "
            f"samples/s {row['samples_per_s']:.1f} tokens/s {row['tokens_per_s']:.0f} "
            f"mfu {100 * row['mfu']:.2f}%"
        )


def _epoch_done(state: LoopState, spec: RunSpec) -> float:
    """Epochs trained so far, the current one's consumed share included (e.g. 1.25)."""
    return state.epoch + state.micro_in_epoch / max(1, spec.micro_per_epoch)


def _checkpoint(
    engine, state: LoopState, cfg: Config, spec: RunSpec, val_shard, tracker, ledger: Ledger
) -> None:
    metrics = evaluate(engine, val_shard, cfg, spec)
    if not math.isfinite(metrics.get("val_loss", 0.0)):  # the weights are NaN: do not save them
        raise NonFiniteLossError(
            f"validation loss is {metrics['val_loss']} at step {state.step}; lower train.lr"
        )
    epoch = _epoch_done(state, spec)
    metrics.update(step=state.step, epoch=round(epoch, 4))
    state.history.append({"step": state.step, "epoch": round(epoch, 4), **metrics})
    if tracker is not None:
        tracker.log(state.step, metrics)
        tracker.flush()  # on disk before the checkpoint that a resume starts from
    if _rank() == 0:
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val_"))
        say(f"validation at step {state.step}: {shown}")
    _save_and_report(engine, state, metrics, spec, ledger)


PREEMPTED = -2  # `_train`'s saved_at once this launch has saved for a preemption


def _on_preemption(
    notice: Any,
    engine: Any,
    state: LoopState,
    spec: RunSpec,
    ledger: Ledger,
    train: TrainConfig,
    saved_at: int,
) -> None:
    """A node of the run is being reclaimed: every rank saves its ZeRO shards now (unless this
    step's checkpoint was just saved), then waits for Ray Train to restart the group from it.
    Ray Train commits the checkpoint only once every rank has reported its part (raylm never
    sets relax_collectives_on_preemption), and each rank's manifest makes a resume refuse it
    if a part is missing."""
    if _rank() == 0:
        say(preemption.describe(notice, state.step))
    if saved_at != state.step:
        state.preemptions += 1
        metrics = preemption.checkpoint_metrics(
            train.best_metric, train.best_mode, state.step, _epoch_done(state, spec)
        )
        _save_and_report(engine, state, metrics, spec, ledger)
    preemption.await_teardown(notice)
    if _rank() == 0:
        say("warning: the preempted node(s) were not taken: training goes on")


def engine_class(train: TrainConfig) -> type:
    """DeepSpeed's engine as raylm drives it: the pipeline engine for pipeline stages."""
    if train.parallel.pipeline_stages > 1:
        from raylm.train.pipeline import PipelineEngine

        return PipelineEngine
    from raylm.train.deepspeed import Engine

    return Engine


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Build model + DeepSpeed engine, restore, then train/evaluate/checkpoint until done."""
    import ray.train

    from raylm.train.flops import device_peak_flops

    cfg: Config = parse_config(config["cfg"])
    spec: RunSpec = config["spec"]
    configure_ray_data()  # this worker iterates its shards: no progress lines outside a terminal
    task = get_task(spec.task)
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    model = task.build_model(
        cfg.model, spec.vocab_size, spec.num_labels, spec.pad_id, spec.eos_id, spec.id2label
    )
    # Elastic runs: the batch sizes of the worker count this launch has (raylm.train.elastic).
    train = elastic.on_workers(cfg.train, _world()) if cfg.train.elastic else cfg.train

    def create(universal: bool = False) -> Any:
        extra = {"universal": True} if universal else {}
        return engine_class(train).create(
            model, train, spec.total_steps, labelled_loss=task.labelled_loss, **extra
        )

    engine, state, ledger = restore(create, ray.train.get_checkpoint())
    if engine.frozen and _rank() == 0:
        from raylm.models.build import count_parameters

        trained, total = count_parameters(model), count_parameters(model, trainable_only=False)
        say(f"training {trained:,} of {total:,} parameters ({100 * trained / total:.2f}%)")
    # `from_pretrained` hands back a model in eval mode: without this a fine-tune trained without
    # dropout until its first validation, and a resume (eval mode again) drew other losses.
    engine.train_mode(True)
    peak = device_peak_flops(cfg.train.use_gpu, cfg.train.peak_flops)  # one worker's device
    meter = Meter(spec.flops_per_token, peak * _world(), cfg.train.parallel.model_parallel)
    if cfg.train.elastic:  # this rank's fixed parts of the split, read in turn
        names = elastic.my_parts(cfg.train, _rank(), _world())
        train_shards = [ray.train.get_dataset_shard(n) for n in names]
        if _rank() == 0:
            say(f"elastic: {_world()} worker(s), {len(names)} micro-batch(es) each per step")
    else:
        train_shards = [ray.train.get_dataset_shard("train")]
    stride = None
    if config.get("strided"):  # the whole split, streamed: this replica's rows of each group
        replicas = _world() // cfg.train.parallel.model_parallel
        stride = (cfg.train.parallel.data_rank(_rank(), _world()), replicas)
    val_shard = ray.train.get_dataset_shard("validation")
    # Rank 0 logs to the run's tracking (raylm.tracking); a queue put per logged step.
    tracker = Tracker(spec.tracking, state.step) if spec.tracking and _rank() == 0 else None
    try:
        _train(
            cfg, spec, task, engine, state, meter, train_shards, val_shard, tracker, ledger, stride
        )
    finally:
        if tracker is not None:
            tracker.close()


def _train(
    cfg: Config,
    spec: RunSpec,
    task: Any,
    engine: Any,
    state: LoopState,
    meter: Meter,
    train_shards: list[Any],
    val_shard: Any,
    tracker: Any = None,
    ledger: Ledger | None = None,
    stride: tuple[int, int] | None = None,
) -> None:
    """Epochs of steps, with validation + checkpoints at eval_every and at each epoch's end;
    the ledger records which examples were trained on (raylm.train.ledger). On a preemption
    notice every rank saves a checkpoint at once (raylm.train.preemption). `train_shards`: the
    rank's shard, or in an elastic run its parts, read in turn (raylm.train.elastic); the loop
    state counts micro-batches consumed per shard. `stride`: see `batches`."""
    ledger = ledger or Ledger(state.epoch)
    saved_at = -1  # the step of this launch's newest checkpoint
    every_poll = cfg.train.preemption_poll_steps
    total, stop_at = spec.total_steps, cfg.train.max_steps or spec.total_steps
    while state.epoch < cfg.train.epochs and state.step < stop_at:
        finished_epoch = True
        ledger.start(state.epoch)
        per = len(train_shards)
        epoch_batches = elastic.interleave(
            batches(s, cfg.train, task.collate, state.epoch, spec, True, ids=True, stride=stride)
            for s in train_shards
        )
        for i, batch in enumerate(epoch_batches):
            ids = batch.pop(IDS_KEY)
            if i < state.micro_in_epoch * per:
                continue  # consumed before the checkpoint we resumed from (in its ledger)
            stepped = train_step(engine, meter, batch)
            ledger.add(ids.cpu().numpy().view(np.uint64))
            state.micro_in_epoch = (i + 1) // per
            if not stepped:
                continue
            state.step = engine.global_step
            if state.step % cfg.train.log_every == 0:
                _log(cfg, state, meter, engine, total, tracker)
            if state.step >= stop_at:
                finished_epoch = False
                break
            if cfg.train.eval_every and state.step % cfg.train.eval_every == 0:
                t0 = time.perf_counter()
                _checkpoint(engine, state, cfg, spec, val_shard, tracker, ledger)
                saved_at = state.step
                meter.exclude(time.perf_counter() - t0)  # validation is not training time
            if saved_at != PREEMPTED and (notice := preemption.notice(every_poll, state.step)):
                t0 = time.perf_counter()
                _on_preemption(notice, engine, state, spec, ledger, cfg.train, saved_at)
                saved_at = PREEMPTED  # once per launch: the next launch starts from it
                meter.exclude(time.perf_counter() - t0)
        if finished_epoch:
            state.epoch, state.micro_in_epoch = state.epoch + 1, 0
        t0 = time.perf_counter()
        _checkpoint(engine, state, cfg, spec, val_shard, tracker, ledger)
        meter.exclude(time.perf_counter() - t0)
