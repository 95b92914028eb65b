"""Elastic training: a run on as many workers as the cluster holds, between train.min_workers and
train.num_workers (`num_workers: [min, max]`), that goes on when a worker is lost for good and
grows back when room returns, with the same global batch and the same examples in every step.

    train: {num_workers: [1, 2], zero_stage: 2}      # 2 workers while the cluster holds them

Ray Train's elastic scaling (ScalingConfig(num_workers=(min, max))) restarts the worker group
at the size that fits: after a worker's node dies (a failure, train.max_failures), and every
train.elastic_resize_s while it runs when more room appears (a resize). Each restart resumes
from the latest checkpoint (raylm.train.resume), which three things make worker-count-free:

* **Data.** The training split is cut once, in order, into `parts = num_workers x grad_accum`
  fixed parts (`train@0`, `train@1`, ...). Every optimizer step trains on one micro-batch of each
  part: on n workers, rank r reads parts r, r + n, r + 2n, ... in turn and accumulates
  parts / n micro-batches a step. The global batch and the examples of every step are those of
  any other worker count, and a checkpoint's position (micro-batches consumed per part) means
  the same thing on any worker count.
* **ZeRO state.** A checkpoint saved by another number of ranks is converted with DeepSpeed's
  universal checkpoint (deepspeed.checkpoint.ds_to_universal) into a folder of whole tensors
  per parameter, and loaded by an engine created with `checkpoint.load_universal`: weights,
  Adam moments, step and scheduler come back resharded onto the ranks there are now. Each rank
  converts into a temporary folder of its own (no shared filesystem needed; seconds for small
  models: the conversion reads every shard once).
* **Ledger.** New rank r takes the ledgers of the old ranks k with k % n == r, so the ledgers
  of all ranks together still list every example of the epoch once (raylm.train.ledger).

Steps lost: none when a worker is lost right after a checkpoint; otherwise the steps since the
latest checkpoint (train.eval_every) are trained again, on the new worker count. A resize to
grow the group also restarts it: the steps since its latest checkpoint are trained again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from raylm.config import TrainConfig

SPLIT = "train"  # the split cut into parts


def parts(train: TrainConfig) -> int:
    """Fixed parts of the training split: one micro-batch of each makes a step."""
    return train.num_workers * train.grad_accum


def part_names(train: TrainConfig) -> list[str]:
    return [f"{SPLIT}@{i}" for i in range(parts(train))]


def my_parts(train: TrainConfig, rank: int, world: int) -> list[str]:
    """The parts rank `rank` of `world` reads, in the order it reads them."""
    return part_names(train)[rank::world]


def on_workers(train: TrainConfig, world: int) -> TrainConfig:
    """The run's TrainConfig for `world` workers: the same global batch, with the accumulation
    that world needs (DeepSpeed's engine takes its batch sizes from here)."""
    accum, left = divmod(parts(train), world)
    if left or not train.fewest_workers <= world <= train.num_workers:
        raise ValueError(
            f"{world} worker(s) cannot share {parts(train)} parts (train.num_workers "
            f"[{train.fewest_workers}, {train.num_workers}] x grad_accum {train.grad_accum})"
        )
    return train.model_copy(update={"num_workers": world, "min_workers": None, "grad_accum": accum})


_DONE = object()


def interleave(streams: Iterable[Iterable[Any]]) -> Iterator[Any]:
    """One item of each stream in turn (`a0 b0 a1 b1 ...`), until every stream is done."""
    iterators = [iter(s) for s in streams]
    for batch in itertools.zip_longest(*iterators, fillvalue=_DONE):
        yield from (x for x in batch if x is not _DONE)


def to_universal(ckpt_dir: str | Path, out_dir: str | Path, tag: str = "ds") -> str:
    """Convert the DeepSpeed checkpoint `<ckpt_dir>/<tag>` (ZeRO 1-3, any number of ranks) into
    a universal checkpoint `<out_dir>/<tag>_universal`, and return that tag. The checkpoint is
    only read; DeepSpeed's console output goes to a buffer, shown if the conversion fails."""
    from deepspeed.checkpoint import ds_to_universal

    universal = f"{tag}_universal"
    args = argparse.Namespace(
        input_folder=str(Path(ckpt_dir) / tag),
        output_folder=str(Path(out_dir) / universal),
        num_extract_workers=1,  # in this process: a Ray worker should not fork a pool
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        # raylm's checkpoints do not carry DeepSpeed's universal-checkpoint marker; the
        # conversion adds it in memory, the checkpoint files are not touched.
        inject_missing_state=True,
    )
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            ds_to_universal.main(args)
    except Exception as err:
        raise RuntimeError(
            f"converting {args.input_folder} to a universal checkpoint failed: {err}\n"
            + log.getvalue()[-2000:]
        ) from err
    return universal
