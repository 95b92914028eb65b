"""Where raylm's training step spends its time: cProfile of the benchmark step, by phase.

    python -m benchmarks.profile_step --zero 2      # the train_step benchmark's model and batches
    python -m benchmarks.profile_step --zero 0 --top 25

One process, no Ray (a gloo world of 1, as Ray Train would start): the same Engine, Meter and
batches as benchmarks/train_step.py. Prints the share of the timed steps spent in forward+backward
vs Engine.step (optimizer, ZeRO bookkeeping, LR schedule) and the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import socket
import time

from benchmarks import common


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zero", type=int, default=2, choices=(0, 1, 2, 3))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    )
    import torch
    import torch.distributed as dist

    from raylm.train.deepspeed import Engine
    from raylm.train.loop import Meter
    from raylm.train.tasks import count_tokens

    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # as Ray Train does for a CPU worker group (here of one)
    cfg = common.train_config(1, args.zero, args.steps + args.warmup)
    engine = Engine.create(common.make_model(), cfg, args.steps + args.warmup)
    meter = Meter(1.0, 1e11)
    data = common.batches(8)
    phases = {"forward_backward": 0.0, "engine.step": 0.0, "meter": 0.0}

    def step(i: int, timed: bool) -> None:
        batch = data[i % len(data)]
        t0 = time.perf_counter()
        loss = engine.forward_backward(batch)
        t1 = time.perf_counter()
        engine.step()
        t2 = time.perf_counter()
        meter.add(loss, len(batch["input_ids"]), count_tokens(batch))
        if engine.global_step % cfg.log_every == 0:
            meter.read()
        t3 = time.perf_counter()
        if timed:
            phases["forward_backward"] += t1 - t0
            phases["engine.step"] += t2 - t1
            phases["meter"] += t3 - t2

    for i in range(args.warmup):
        step(i, False)
    prof = cProfile.Profile()
    prof.enable()
    for i in range(args.steps):
        step(i, True)
    prof.disable()
    total = sum(phases.values())
    print(f"ZeRO-{args.zero}, {args.steps} steps, {1000 * total / args.steps:.1f} ms/step:")
    for name, sec in phases.items():
        print(f"  {name:18s} {1000 * sec / args.steps:7.1f} ms  {100 * sec / total:5.1f}%")
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
