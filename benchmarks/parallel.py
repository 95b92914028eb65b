"""Parallel layouts side by side on 2 processes: plain DDP against raylm's data parallel with
ZeRO-1/2/3, tensor parallel (T = 2) and pipeline stages (P = 2), on the same GPT-2 and the same
global batch.

    python -m benchmarks.parallel --quick     # about 5 minutes on 2 cores
    python -m benchmarks.parallel             # more steps and repeats

Every case trains the same GPT-2 (4 layers, hidden 256, vocabulary 6000, fp32, no dropout) on
the same synthetic 64-token blocks, 16 blocks per optimizer step over the two processes: DDP and
raylm's data-parallel layouts take 8 per process; tensor parallel, where both ranks compute
every block, takes 16 per step on both; the pipeline takes 4 micro-batches of 4 (its stages
work on different micro-batches at once; DeepSpeed's 1F1B schedule). One thread per process,
AdamW, clipping 1.0. raylm's step is the loop's own (`raylm.train.loop.train_step` until an
optimizer step is taken, a `Meter.read` every `log_every` steps), timed inside TorchTrainer
workers with in-memory batches. step_s = mean seconds per optimizer step in steady state (the
first `skip` steps not timed); ratios are against DDP, with their spread over interleaved
repeats. On 2 CPU cores model parallelism cannot win (nothing is too large for one process, and
the split layers each do less work per message); the figures show what each layout costs on
top of data parallelism, not what it buys on GPUs.
Writes benchmarks/results/parallel.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from benchmarks import common
from benchmarks.harness import Case, compare, write_results

SEQ, GLOBAL, VOCAB, PAD = 64, 16, 6000, 0
LAYOUTS = {  # name: (zero stage, micro-batch, grad_accum, parallel)
    "raylm_dp2_zero1": (1, 8, 1, {}),
    "raylm_dp2_zero2": (2, 8, 1, {}),
    "raylm_dp2_zero3": (3, 8, 1, {}),
    "raylm_tp2_zero1": (1, 16, 1, {"tensor_parallel": 2}),
    "raylm_pp2_zero1": (1, 4, 4, {"pipeline_stages": 2}),
}


def _model():
    import torch

    from raylm.config import ModelConfig
    from raylm.tasks import build_model

    torch.manual_seed(common.SEED)
    model = ModelConfig(task="causal_lm", preset="small", dropout=0.0)
    return build_model(model, VOCAB, 2, PAD, 1)


def _batches(n: int, size: int, seed: int) -> list[dict[str, Any]]:
    """`n` micro-batches of `size` full blocks, collated by raylm's causal-LM collate."""
    import numpy as np

    from raylm.data.collate import collate_lm

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(5, VOCAB, size=(size, SEQ), dtype=np.int32)
        out.append(collate_lm({"input_ids": list(ids), "labels": list(ids)}, PAD))
    return out


def _train_config(name: str, steps: int):
    from raylm.config import TrainConfig

    zero, micro, accum, parallel = LAYOUTS[name]
    return TrainConfig(
        num_workers=2,
        cpus_per_worker=1,
        batch_size=micro,
        grad_accum=accum,
        zero_stage=zero,
        lr=1e-3,
        max_steps=steps,
        peak_flops=1e11,  # skip the matmul probe: MFU is not what this benchmark compares
        log_every=20,
        shuffle_buffer=0,
        parallel=parallel,
    )


def raylm_worker(config: dict[str, Any]) -> None:
    """Runs inside a TorchTrainer worker: raylm's engine for the layout, its loop's step."""
    import torch
    import torch.distributed as dist

    from raylm.train.loop import Meter, engine_class, train_step

    t_start = config["t_launch"]
    torch.set_num_threads(1)
    cfg = _train_config(config["layout"], config["steps"])
    engine = engine_class(cfg).create(_model(), cfg, config["steps"])
    meter = Meter(1.0, 1e11, cfg.parallel.model_parallel)
    replica = cfg.parallel.data_rank(dist.get_rank(), dist.get_world_size())
    data = _batches(8, cfg.batch_size, common.SEED + replica)  # a replica's ranks: same rows
    dist.barrier()
    ready = time.time()
    times, i = [], 0
    for _ in range(config["steps"]):
        t0 = time.perf_counter()
        while not train_step(engine, meter, data[i % len(data)]):
            i += 1
        i += 1
        if engine.global_step % cfg.log_every == 0:
            meter.read()
        times.append(time.perf_counter() - t0)
    common.put(config, {**common.steady(times, config["skip"]), "startup_s": ready - t_start})


def raylm_case(layout: str, steps: int, skip: int) -> dict[str, float]:
    cfg = {"layout": layout, "steps": steps, "skip": skip, "t_launch": time.time()}
    m = common.fit(raylm_worker, cfg, 2)
    return {k: float(m[k]) for k in ("step_s", "step_median_s", "startup_s", "wall_s")}


def _ddp_proc(rank: int, port: int, steps: int, skip: int, queue) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.optim.lr_scheduler import LambdaLR

    from raylm.train.deepspeed import lr_lambda, param_groups

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = DDP(_model())
    model.train()
    cfg = _train_config("raylm_dp2_zero1", steps)
    opt = torch.optim.AdamW(param_groups(model.module, cfg.weight_decay), lr=cfg.lr)
    sched = LambdaLR(opt, lr_lambda(cfg, steps))
    data = _batches(8, GLOBAL // 2, common.SEED + rank)
    dist.barrier()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        model(**data[i % len(data)]).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    dist.destroy_process_group()
    queue.put((rank, common.steady(times, skip)))


def ddp_case(steps: int, skip: int) -> dict[str, float]:
    got, _ = common.spawn_pair(_ddp_proc, steps, skip)
    rank0 = dict(got)[0]
    return {k: rank0[k] for k in ("step_s", "step_median_s")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args(argv)
    steps, skip, repeats = (25, 5, 2) if args.quick else (60, 10, 4)
    common.start_ray()
    cases = [Case("ddp_gloo_2p", lambda: ddp_case(steps, skip))] + [
        Case(name, lambda name=name: raylm_case(name, steps, skip)) for name in LAYOUTS
    ]
    table = compare(cases, repeats=repeats, warmup=0, baseline="ddp_gloo_2p")
    notes = {
        "model": "GPT-2, 4 layers, hidden 256, 4 heads, vocab 6000, fp32, no dropout",
        "batch": f"{GLOBAL} blocks x {SEQ} tokens per optimizer step over 2 processes "
        "(DP: 8 per process; TP: 16 on both ranks; PP: 4 micro-batches of 4)",
        "steps": f"{steps} per run, first {skip} not timed; {repeats} interleaved repeats",
        "metric": "step_s = mean seconds per optimizer step in steady state (rank 0)",
    }
    write_results("parallel", table, notes)
    return table


if __name__ == "__main__":
    main()
