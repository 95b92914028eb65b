"""Training step overhead: raylm's step (TorchTrainer + DeepSpeed) vs plain PyTorch, side by side.

    python -m benchmarks.train_step --quick     # a few minutes on 2 cores
    python -m benchmarks.train_step             # more steps and repeats

Same tiny BERT classifier (2 layers, hidden 128), same synthetic batches (32 rows, 8..64 tokens,
padded by raylm's collate), one thread per process, AdamW + linear LR + grad clipping 1.0.
1 process: a plain loop vs raylm 1 worker (ZeRO-0, ZeRO-2). 2 processes: DDP over gloo (two
processes we spawn) vs raylm 2 workers (ZeRO-0, ZeRO-2). raylm's step is what its loop runs:
`raylm.train.loop.train_step` (the loop's own step) and a `Meter.read` (all-reduce) every
`log_every` steps; it is timed inside the worker with in-memory batches (the input pipeline is
benchmarks/ingest.py's subject). Steady state = the mean step after `skip` warm-up steps; startup
(process/worker-group start, model build, engine init) is reported apart as `startup_s`.
Writes benchmarks/results/train_step_1proc.{json,md} and train_step_2proc.{json,md}.

    python -m benchmarks.train_step --sizes --quick   # ZeRO-2 overhead at 3 model sizes

At 2x128 (the tiny preset), 4x256 and 6x512: 1 process, plain PyTorch vs raylm ZeRO-2 as it is
and with `contiguous_gradients` off; 2 processes at 4x256, DDP vs raylm ZeRO-2 as it is and
with `overlap_comm` on (DeepSpeed's knobs, set in the worker over raylm's ds_config). Whether the
ZeRO-2 cost is a fixed per-parameter cost that larger models hide or raylm's own:
train_step_size_<size>.{json,md} and train_step_size_4x256_2proc.{json,md}.

    python -m benchmarks.train_step --knobs --quick   # DeepSpeed's ZeRO-2 knobs, side by side

raylm ZeRO-2 as it is and with each of KNOBS (bucket sizes, round-robin gradients, PyTorch-style
backward) beside plain PyTorch at 6x512 (1 process) and DDP at 4x256 (2 processes):
train_step_knobs_6x512 and train_step_knobs_4x256_2proc (.json, .md).

    python -m benchmarks.train_step --tracking   # tracking on vs off (run.tracking)

The same raylm ZeRO-2 worker with rank 0's Tracker (TensorBoard events and an MLflow run in a
SQLite store, raylm.tracking) logging the meter's row every `log_every` steps, as the loop
does, against the same worker without it: train_step_tracking.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from benchmarks import common
from benchmarks.harness import Case, compare, write_results


def _plain_optimizer(model):
    import torch
    from torch.optim.lr_scheduler import LambdaLR

    from raylm.train.deepspeed import lr_lambda, param_groups

    cfg = common.train_config(1, 0, 1000)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    return opt, LambdaLR(opt, lr_lambda(cfg, 1000))


def plain_phases(model, opt, sched, batch) -> tuple[float, float, float]:
    """One plain step, timed by phase: forward, backward, update (clip, AdamW, LR schedule)."""
    import torch

    t0 = time.perf_counter()
    out = model(**batch)
    t1 = time.perf_counter()
    out.loss.backward()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def _plain_steps(model, steps: int) -> list[float]:
    """The plain loop: forward, backward, clip, AdamW, LR schedule; one timing per step."""
    opt, sched = _plain_optimizer(model)
    data = common.batches(8)
    return [sum(plain_phases(model, opt, sched, data[i % len(data)])) for i in range(steps)]


def plain_case(steps: int, skip: int, size: str = "2x128") -> dict[str, float]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        model = common.make_model(size)
        model.train()
        startup = time.perf_counter() - t0
        res = common.steady(_plain_steps(model, steps), skip)
    finally:
        torch.set_num_threads(threads)
    return {**res, "startup_s": startup}


def _ddp_proc(rank: int, port: int, steps: int, size: str, queue) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = DDP(common.make_model(size))
    model.train()
    dist.barrier()
    ready = time.time()
    times = _plain_steps(model, steps)
    dist.destroy_process_group()
    queue.put((rank, ready, times))


def ddp_case(steps: int, skip: int, size: str = "2x128") -> dict[str, float]:
    got, launched = common.spawn_pair(_ddp_proc, steps, size)
    rank0 = next(g for g in got if g[0] == 0)
    return {**common.steady(rank0[2], skip), "startup_s": rank0[1] - launched}


def raylm_worker(config: dict[str, Any]) -> None:
    """Runs inside a TorchTrainer worker: raylm's engine and meter on in-memory batches."""
    import torch
    import torch.distributed as dist

    from raylm.tracking import Tracker
    from raylm.train.deepspeed import Engine
    from raylm.train.loop import Meter, train_step

    t_start = config["t_launch"]
    torch.set_num_threads(1)
    knobs = dict(config.get("knobs") or {})
    if knobs.pop("pytorch_backward", False):  # DeepSpeed's PyTorch-style `loss.backward()`
        _use_pytorch_backward()
    if knobs:  # DeepSpeed's ZeRO knobs over raylm's own config
        import raylm.train.deepspeed as raylm_ds

        base = raylm_ds.ds_config

        def tuned(train):
            out = base(train)
            out["zero_optimization"].update(knobs)
            return out

        raylm_ds.ds_config = tuned
    cfg = common.train_config(config["workers"], config["zero"], config["steps"])
    size = config.get("size", "2x128")
    engine = Engine.create(common.make_model(size), cfg, config["steps"])
    meter = Meter(1.0, 1e11)
    data = common.batches(8)
    target = config.get("tracking")
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    tracker = Tracker(target) if target and rank0 else None
    if dist.is_initialized():
        dist.barrier()
    ready = time.time()
    times = []
    for i in range(config["steps"]):
        t0 = time.perf_counter()
        train_step(engine, meter, data[i % len(data)])
        if engine.global_step % cfg.log_every == 0:
            row = meter.read()
            if tracker is not None:
                tracker.log(engine.global_step, {**row, "lr": engine.lr})
        times.append(time.perf_counter() - t0)
    if tracker is not None:
        tracker.close()
    common.put(config, {**common.steady(times, config["skip"]), "startup_s": ready - t_start})


def _use_pytorch_backward() -> None:
    """Engine.forward_backward calling `loss.backward()` itself, as DeepSpeed 0.18+ allows with a
    ZeRO optimizer (its hooks run the pre/post-backward work), instead of `engine.backward`."""
    from raylm.train.deepspeed import Engine

    def forward_backward(self, batch):
        engine = self.engine
        assert engine._support_torch_style_backward, "this DeepSpeed has no PyTorch-style backward"
        loss = engine(**batch).loss
        (loss / engine.gradient_accumulation_steps()).backward()
        return loss.detach()

    Engine.forward_backward = forward_backward


def _tracking_target() -> Any:
    """A fresh TensorBoard folder and MLflow run (SQLite store), as `raylm train` opens them."""
    import tempfile
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from raylm.tracking import TrackingTarget

    folder = Path(tempfile.mkdtemp(prefix="raylm-bench-tracking-"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("bench", artifact_location=(folder / "a").as_uri())
    run = client.create_run(experiment, run_name="bench")
    return TrackingTarget(str(folder / "tensorboard"), uri, run.info.run_id)


def raylm_case(
    workers: int,
    zero: int,
    steps: int,
    skip: int,
    tracking: bool = False,
    size: str = "2x128",
    knobs: dict[str, Any] | None = None,
) -> dict[str, float]:
    cfg = {"workers": workers, "zero": zero, "steps": steps, "skip": skip, "t_launch": time.time()}
    cfg |= {"size": size, "knobs": knobs or {}}
    if tracking:
        cfg["tracking"] = _tracking_target()
    m = common.fit(raylm_worker, cfg, workers)
    keys = ("step_s", "step_median_s", "steps_timed", "startup_s", "wall_s")
    return {k: float(m[k]) for k in keys}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--tracking", action="store_true", help="only tracking on vs off")
    parser.add_argument("--sizes", action="store_true", help="only ZeRO-2 at 3 model sizes")
    parser.add_argument("--knobs", action="store_true", help="ZeRO-2 knobs side by side")
    args = parser.parse_args(argv)
    steps, skip, repeats = (40, 10, 2) if args.quick else (150, 20, 5)
    common.start_ray()
    if args.tracking:
        return {"train_step_tracking": tracking_table(steps, skip, repeats)}
    if args.sizes:
        return size_tables(*((20, 5, 2) if args.quick else (60, 10, 3)))
    if args.knobs:
        return knob_tables(*((20, 5, 2) if args.quick else (60, 10, 3)))
    notes = {
        "model": "BERT classifier, 2 layers, hidden 128, vocab 6000, fp32",
        "batch": f"{common.BATCH} rows x 8..{common.MAX_LEN} tokens, 1 thread per process",
        "steps": f"{steps} per run, first {skip} not timed; {repeats} interleaved repeats",
        "metric": "step_s = mean seconds per optimizer step in steady state (per process)",
    }
    tables = {}
    one = [
        Case("plain_pytorch", lambda: plain_case(steps, skip)),
        Case("raylm_zero0_1w", lambda: raylm_case(1, 0, steps, skip)),
        Case("raylm_zero2_1w", lambda: raylm_case(1, 2, steps, skip)),
    ]
    tables["train_step_1proc"] = compare(one, repeats=repeats, warmup=0, baseline="plain_pytorch")
    write_results("train_step_1proc", tables["train_step_1proc"], notes)
    two = [
        Case("ddp_gloo_2p", lambda: ddp_case(steps, skip)),
        Case("raylm_zero0_2w", lambda: raylm_case(2, 0, steps, skip)),
        Case("raylm_zero2_2w", lambda: raylm_case(2, 2, steps, skip)),
    ]
    tables["train_step_2proc"] = compare(two, repeats=repeats, warmup=0, baseline="ddp_gloo_2p")
    write_results("train_step_2proc", tables["train_step_2proc"], notes)
    return tables


def size_tables(steps: int, skip: int, repeats: int) -> dict[str, Any]:
    """ZeRO-2 against plain PyTorch at three model sizes; two DeepSpeed knobs beside it."""
    tables = {}
    notes = {
        "batch": f"{common.BATCH} rows x 8..{common.MAX_LEN} tokens, 1 thread per process",
        "steps": f"{steps} per run, first {skip} not timed; {repeats} interleaved repeats",
        "metric": "step_s = mean seconds per optimizer step in steady state (per process)",
    }
    for size in common.SIZES:
        cases = [
            Case("plain_pytorch", lambda size=size: plain_case(steps, skip, size)),
            Case("raylm_zero2_1w", lambda size=size: raylm_case(1, 2, steps, skip, size=size)),
            Case(
                "raylm_zero2_1w_contiguous_off",
                lambda size=size: raylm_case(
                    1, 2, steps, skip, size=size, knobs={"contiguous_gradients": False}
                ),
            ),
        ]
        name = f"train_step_size_{size}"
        tables[name] = compare(cases, repeats=repeats, warmup=0, baseline="plain_pytorch")
        write_results(name, tables[name], {**notes, "model": f"BERT classifier {size}, fp32"})
    size = "4x256"
    cases = [
        Case("ddp_gloo_2p", lambda: ddp_case(steps, skip, size)),
        Case("raylm_zero2_2w", lambda: raylm_case(2, 2, steps, skip, size=size)),
        Case(
            "raylm_zero2_2w_overlap_comm",
            lambda: raylm_case(2, 2, steps, skip, size=size, knobs={"overlap_comm": True}),
        ),
    ]
    name = f"train_step_size_{size}_2proc"
    tables[name] = compare(cases, repeats=repeats, warmup=0, baseline="ddp_gloo_2p")
    write_results(name, tables[name], {**notes, "model": f"BERT classifier {size}, fp32"})
    return tables


def tracking_table(steps: int, skip: int, repeats: int) -> dict[str, Any]:
    cases = [
        Case("raylm_zero2_1w", lambda: raylm_case(1, 2, steps, skip)),
        Case("raylm_zero2_1w_tracked", lambda: raylm_case(1, 2, steps, skip, tracking=True)),
    ]
    table = compare(cases, repeats=repeats, warmup=0, baseline="raylm_zero2_1w")
    notes = {
        "model": "BERT classifier, 2 layers, hidden 128, vocab 6000, fp32; ZeRO-2, 1 worker",
        "tracking": "TensorBoard + MLflow (SQLite) from rank 0's thread, every log_every=20 steps",
        "steps": f"{steps} per run, first {skip} not timed; {repeats} interleaved repeats",
        "metric": "step_s = mean seconds per optimizer step in steady state",
    }
    write_results("train_step_tracking", table, notes)
    return table


# DeepSpeed's ZeRO-2 knobs tried against raylm's settings (the issue-21 list): buckets of a tenth
# and of ten times DeepSpeed's default (5e8 elements), round-robin gradient partitioning, and the
# PyTorch-style backward. overlap_comm and contiguous_gradients are in --sizes.
KNOBS = {
    "bucket_5e7": {"reduce_bucket_size": int(5e7), "allgather_bucket_size": int(5e7)},
    "bucket_5e9": {"reduce_bucket_size": int(5e9), "allgather_bucket_size": int(5e9)},
    "round_robin": {"round_robin_gradients": True},
    "pytorch_backward": {"pytorch_backward": True},
}


def knob_tables(steps: int, skip: int, repeats: int) -> dict[str, Any]:
    """ZeRO-2 with each of KNOBS beside raylm's settings and the plain reference: 1 process at
    6x512 (the largest size, target <= 1.05) and 2 processes at 4x256 (target <= 1.10)."""
    notes = {
        "batch": f"{common.BATCH} rows x 8..{common.MAX_LEN} tokens, 1 thread per process",
        "steps": f"{steps} per run, first {skip} not timed; {repeats} interleaved repeats",
        "metric": "step_s = mean seconds per optimizer step in steady state (per process)",
        "knobs": dict(KNOBS),
    }
    tables = {}
    for name, workers, size, ref, reference in (
        ("train_step_knobs_6x512", 1, "6x512", "plain_pytorch", plain_case),
        ("train_step_knobs_4x256_2proc", 2, "4x256", "ddp_gloo_2p", ddp_case),
    ):
        cases = [
            Case(ref, lambda size=size, f=reference: f(steps, skip, size)),
            Case(
                f"raylm_zero2_{workers}w",
                lambda size=size, w=workers: raylm_case(w, 2, steps, skip, size=size),
            ),
        ]
        for label, knobs in KNOBS.items():
            run = lambda size=size, w=workers, k=knobs: raylm_case(  # noqa: E731
                w, 2, steps, skip, size=size, knobs=k
            )
            cases.append(Case(f"raylm_zero2_{workers}w_{label}", run))
        tables[name] = compare(cases, repeats=repeats, warmup=0, baseline=ref)
        write_results(name, tables[name], {**notes, "model": f"BERT classifier {size}, fp32"})
    return tables


if __name__ == "__main__":
    main()
