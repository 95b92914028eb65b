"""Where raylm's training step spends its time: cProfile of the benchmark step, by phase.

    python -m benchmarks.profile_step --zero 2      # the train_step benchmark's model and batches
    python -m benchmarks.profile_step --zero 0 --top 25

One process, no Ray (a gloo world of 1, as Ray Train would start): the loop's own `train_step`
on the same Engine, Meter and batches as benchmarks/train_step.py. Prints the share of the timed
steps spent in forward+backward vs Engine.step (optimizer, ZeRO bookkeeping, LR schedule) vs the
meter, read from the profile, and the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from benchmarks import common


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zero", type=int, default=2, choices=(0, 1, 2, 3))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    from raylm.train.deepspeed import Engine
    from raylm.train.loop import Meter, train_step

    common.single_process_group()  # as Ray Train does for a CPU worker group (here of one)
    cfg = common.train_config(1, args.zero, args.steps + args.warmup)
    engine = Engine.create(common.make_model(), cfg, args.steps + args.warmup)
    meter = Meter(1.0, 1e11)
    data = common.batches(8)

    def step(i: int) -> None:
        train_step(engine, meter, data[i % len(data)])
        if engine.global_step % cfg.log_every == 0:
            meter.read()

    for i in range(args.warmup):
        step(i)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for i in range(args.steps):
        step(i)
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    # Cumulative time of each phase's functions (callees included), read from the profile.
    phases = {
        "forward_backward": ("deepspeed.py", ("forward_backward",)),
        "engine.step": ("deepspeed.py", ("step",)),
        "meter": ("loop.py", ("add", "read")),
    }
    print(f"ZeRO-{args.zero}, {args.steps} steps, {1000 * total / args.steps:.1f} ms/step:")
    for name, (owner, funcs) in phases.items():
        sec = sum(
            ct
            for (path, _, fn), (_, _, _, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
            if fn in funcs and path.endswith(owner)
        )
        print(f"  {name:18s} {1000 * sec / args.steps:7.1f} ms  {100 * sec / total:5.1f}%")
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
