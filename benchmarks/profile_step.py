"""Where raylm's training step spends its time: cProfile of the benchmark step, by phase.

    python -m benchmarks.profile_step --zero 2      # the train_step benchmark's model and batches
    python -m benchmarks.profile_step --zero 0 --top 25
    python -m benchmarks.profile_step --phases --sizes 4x256,6x512   # plain vs raylm, by phase
    python -m benchmarks.profile_step --allreduce 4x256              # gloo all-reduce of the grads

One process, no Ray (a gloo world of 1, as Ray Train would start): the loop's own `train_step`
on the same Engine, Meter and batches as benchmarks/train_step.py. Prints the share of the timed
steps spent in forward+backward vs Engine.step (optimizer, ZeRO bookkeeping, LR schedule) vs the
meter, read from the profile, and the top functions by own time.

`--phases`: no profiler (it inflates small calls); the plain PyTorch step of
benchmarks/train_step.py and raylm's ZeRO-2 engine on the same batches, timed by phase with
perf_counter, in alternating blocks of steps: forward, backward, and the update (plain: clip,
AdamW, LR schedule, zero_grad; raylm: Engine.step, i.e. DeepSpeed's ZeRO-2 gradient copy into
its flat partition, norm and clip, AdamW on the fp32 partition, the copy back into the model).
Per model size: milliseconds per phase, raylm - plain, and the update's extra cost per million
parameters (a cost that grows with the parameters, as the compute does at a fixed batch, stays
the same share of the step at every size). Writes benchmarks/results/profile_phases.{json,md}.

`--allreduce SIZE`: two gloo processes all-reduce one flat fp32 tensor of the model's parameter
count (what a data-parallel step must move), median ms of 20: the time DDP hides behind its
backward (bucketed hooks) and DeepSpeed's ZeRO-2 on CPU spends after it (its overlap_comm needs
a side CUDA stream).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

from benchmarks import common
from benchmarks.harness import RESULTS


def _raylm_phases(engine, batch) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    loss = engine.engine(**batch).loss
    t1 = time.perf_counter()
    engine.engine.backward(loss)
    t2 = time.perf_counter()
    engine.step()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def phase_table(sizes: list[str], steps: int, warmup: int, blocks: int) -> list[dict]:
    """Plain vs raylm ZeRO-2 by phase at each size (module docstring)."""
    import statistics

    import torch

    from benchmarks.train_step import _plain_optimizer, plain_phases
    from raylm.train.deepspeed import Engine

    torch.set_num_threads(1)
    common.single_process_group()
    data = common.batches(8)
    rows, names = [], ("forward", "backward", "update")
    for size in sizes:
        plain = common.make_model(size)
        plain.train()
        opt, sched = _plain_optimizer(plain)
        total = (warmup + steps) * blocks
        engine = Engine.create(common.make_model(size), common.train_config(1, 2, total), total)
        params = sum(p.numel() for p in plain.parameters())
        got: dict[str, list[tuple[float, float, float]]] = {"plain": [], "raylm": []}
        for block in range(blocks):  # alternate, so drift on a shared machine hits both
            for side in ("plain", "raylm") if block % 2 == 0 else ("raylm", "plain"):
                for i in range(warmup + steps):
                    batch = data[i % len(data)]
                    t = (
                        plain_phases(plain, opt, sched, batch)
                        if side == "plain"
                        else _raylm_phases(engine, batch)
                    )
                    if i >= warmup:
                        got[side].append(t)
        med = {
            side: [1000 * statistics.median(t[k] for t in got[side]) for k in range(3)]
            for side in got
        }
        for k, phase in enumerate(names):
            rows.append(
                {
                    "case": f"{size} {phase}",
                    "plain_ms": round(med["plain"][k], 2),
                    "raylm_ms": round(med["raylm"][k], 2),
                    "raylm_minus_plain_ms": round(med["raylm"][k] - med["plain"][k], 2),
                }
            )
        step = {side: sum(med[side]) for side in med}
        extra = med["raylm"][2] - med["plain"][2]
        rows.append(
            {
                "case": f"{size} step",
                "plain_ms": round(step["plain"], 2),
                "raylm_ms": round(step["raylm"], 2),
                "raylm_minus_plain_ms": round(step["raylm"] - step["plain"], 2),
                "ratio": round(step["raylm"] / step["plain"], 3),
                "params_m": round(params / 1e6, 2),
                "update_extra_ms_per_m_params": round(extra / (params / 1e6), 3),
            }
        )
        for row in rows[-4:]:
            print(row, flush=True)
    notes = {
        "steps": f"{steps} timed + {warmup} warm-up per block, {blocks} alternating blocks",
        "batch": f"{common.BATCH} rows x 8..{common.MAX_LEN} tokens, 1 thread, fp32",
        "metric": "median ms per phase over the timed steps",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    # Not a side-by-side `compare` table (the scorecard reads those): a file of its own.
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"name": "profile_phases", "notes": notes, "phases": rows}
    (RESULTS / "profile_phases.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
    (RESULTS / "profile_phases.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines), flush=True)
    return rows


def _allreduce_proc(rank: int, port: int, numel: int, queue) -> None:
    import os
    import statistics

    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    flat = torch.ones(numel)
    times = []
    for _ in range(25):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(flat)
        times.append(time.perf_counter() - t0)
    dist.destroy_process_group()
    queue.put((rank, 1000 * statistics.median(times[5:])))


def allreduce_ms(size: str) -> float:
    """Median ms of a gloo all-reduce of `size`'s parameter count over 2 local processes."""
    numel = sum(p.numel() for p in common.make_model(size).parameters())
    got, _ = common.spawn_pair(_allreduce_proc, numel)
    ms = max(g[1] for g in got)
    print(f"{size}: {numel / 1e6:.2f}M fp32 parameters, gloo all-reduce {ms:.1f} ms (2 processes)")
    return ms


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", action="store_true", help="plain vs raylm ZeRO-2 by phase")
    p.add_argument("--sizes", default="4x256,6x512", help="with --phases: model sizes")
    p.add_argument("--blocks", type=int, default=4, help="with --phases: alternating blocks")
    p.add_argument("--allreduce", metavar="SIZE", help="gloo all-reduce of SIZE's parameters")
    p.add_argument("--zero", type=int, default=2, choices=(0, 1, 2, 3))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    if args.allreduce:
        allreduce_ms(args.allreduce)
        return
    if args.phases:
        phase_table(args.sizes.split(","), args.steps, args.warmup, args.blocks)
        return
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
