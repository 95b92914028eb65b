"""Where a run resumes: the loop state a checkpoint carries besides DeepSpeed's, each rank's
RNG streams, and the newest complete checkpoint to resume from (incomplete or corrupt ones
skipped, raylm.train.manifest); a checkpoint saved by another number of ranks has its ZeRO
state resharded (raylm.train.elastic). Used by the worker loop (raylm.train.loop)."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from raylm.console import QUIET, verbosity
from raylm.train.ledger import Ledger
from raylm.train.manifest import check_checkpoint


@dataclass
class LoopState:
    """What a checkpoint must restore besides DeepSpeed's own state."""

    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    # Resumes that fell back past a bad checkpoint: later checkpoints of the steps redone get
    # new folder names, so Ray never tracks two checkpoints at one path.
    fallbacks: int = 0
    resumes: int = 0  # launches that continued from a checkpoint (restarts and relaunches)
    preemptions: int = 0  # checkpoints saved on a preemption notice


def say(msg: str) -> None:
    """Console line from a worker (a quiet run keeps warnings). Not print(): Ray Train patches
    print() into a logger that also tees to stdout, which would show every line twice."""
    if verbosity() > QUIET or msg.startswith(("warning", "error")):
        sys.stdout.write(f"[raylm] {msg}\n")
        sys.stdout.flush()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _read_rng(path: Path) -> dict[str, Any] | None:
    """This rank's RNG streams from a checkpoint (tensors only: no unpickling of code)."""
    return torch.load(path, weights_only=True) if path.is_file() else None


def _restore_rng(rng: dict[str, Any] | None) -> None:
    """Dropout masks continue exactly as in an uninterrupted run (checkpoints written before
    the per-rank files carry rank 0's streams in the client state)."""
    if not rng:
        return
    torch.set_rng_state(rng["cpu"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _candidates(ckpt: Any) -> list[Any]:
    """The run's checkpoints up to `ckpt` (Ray Train's latest), newest first."""
    import pyarrow.fs
    import ray.train

    parent, latest = ckpt.path.rstrip("/").rsplit("/", 1)
    infos = ckpt.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    names = sorted(
        (i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory),
        key=_step_of,
        reverse=True,
    )
    names = [
        n for n in names if n.startswith("checkpoint_step") and _step_of(n) <= _step_of(latest)
    ]
    return [ray.train.Checkpoint(f"{parent}/{n}", filesystem=ckpt.filesystem) for n in names]


def _step_of(name: str) -> tuple[int, int]:
    """(step, fallbacks) of `checkpoint_step0000040` or `checkpoint_step0000040_f1`."""
    digits = name.removeprefix("checkpoint_step").split("_f")
    try:
        return int(digits[0]), int(digits[1]) if len(digits) > 1 else 0
    except ValueError:
        return -1, 0


def _load(create: Callable[..., Any], folder: str, saved_by: int) -> tuple[Any, dict]:
    """A new engine with the DeepSpeed state of the checkpoint in `folder`, and its client
    state. ZeRO shards saved by another number of ranks go through a universal checkpoint."""
    sharded = any((Path(folder) / "ds").glob("*optim_states.pt"))  # ZeRO 1-3
    if saved_by == world() or not sharded:
        engine = create()
        return engine, engine.load(folder)
    from raylm.train.elastic import to_universal

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raylm-universal-") as tmp:
        tag = to_universal(folder, tmp)
        engine = create(universal=True)
        client = engine.load(tmp, tag=tag)
    if rank() == 0:
        say(
            f"resharded the ZeRO state of {saved_by} rank(s) onto {world()} "
            f"(universal checkpoint, {time.perf_counter() - t0:.1f} s)"
        )
    return engine, client


def restore(create: Callable[..., Any], ckpt: Any) -> tuple[Any, LoopState, Ledger]:
    """The DeepSpeed engine (`create(universal=False)` builds it), loop state and data ledger
    of the newest complete checkpoint up to `ckpt` (Ray Train's latest; None: a fresh start),
    with the engine's state and the RNG streams restored from it. Incomplete or corrupt
    checkpoints (raylm.train.manifest) are skipped with a warning."""
    if ckpt is None:
        return create(), LoopState(), Ledger()
    skipped, engine, client, rng, ledger = [], None, None, None, None
    for candidate in _candidates(ckpt):
        with candidate.as_directory() as d:
            check = check_checkpoint(d)
            if check.ok:
                engine, client = _load(create, d, check.world)
                rng = _read_rng(Path(d) / f"rng_rank{rank()}.pt")
                ledger = Ledger.read_for(d, rank(), world())
                break
        name = candidate.path.rsplit("/", 1)[-1]
        skipped.append(f"{name} ({check.state}: {check.detail})")
        if rank() == 0:
            say(f"warning: checkpoint {name} is {check.state}, skipped: {check.detail}")
    if engine is None:
        raise RuntimeError(
            f"no complete checkpoint to resume from in {ckpt.path.rsplit('/', 1)[0]}: "
            + "; ".join(skipped)
            + ". Use another run name to start over."
        )
    state = LoopState(**client["loop"])
    state.fallbacks += bool(skipped)
    state.resumes += 1
    _restore_rng(rng or client.get("rng"))
    if rank() == 0:
        say(
            f"resumed from step {state.step} (epoch {state.epoch + 1}, "
            f"micro-batch {state.micro_in_epoch})"
        )
    return engine, state, (ledger or Ledger(state.epoch)).resumed_at(state.epoch)
