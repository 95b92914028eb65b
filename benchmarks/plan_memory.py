"""`raylm plan`'s memory estimate against measured peak memory, on CPU, side by side.

    python -m benchmarks.plan_memory            # a few minutes on 2 cores

For GPT-2 models of three sizes (layers x hidden: 4 x 256, 6 x 512, 8 x 768; vocabulary 6,000,
micro-batch 8 x 128 tokens, fp32), each case in a fresh process: the process's resident memory
after the imports, then a model built by raylm's builder and trained a few steps through
raylm's DeepSpeed engine (one process, gloo, ZeRO-0 and ZeRO-2); the peak resident memory
(`ru_maxrss`) minus the first figure is what training took. `raylm.plan.estimate` predicts it
from the model's shape alone. Repeated `--repeats` times; the ratio measured / estimated is
reported with its spread. CPU resident memory also holds the allocator's free blocks and
DeepSpeed's buffers that a GPU estimate leaves out, so a ratio somewhat above 1 is expected.
Writes benchmarks/results/plan_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from statistics import median

SIZES = [(4, 256), (6, 512), (8, 768)]
VOCAB, BATCH, SEQ, STEPS = 6000, 8, 128, 3


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _case(layers: int, hidden: int, zero: int) -> dict[str, float]:
    """Runs in its own process: measured bytes and the planner's estimate."""
    import torch

    from benchmarks.common import single_process_group
    from raylm.config import ModelConfig, TrainConfig
    from raylm.models.build import causal_lm
    from raylm.plan import Layout, Shape, _blocks, estimate
    from raylm.train.deepspeed import Engine

    single_process_group()
    heads = hidden // 64
    train = TrainConfig(num_workers=1, zero_stage=zero, batch_size=BATCH, lr=1e-4)
    before = _rss_bytes()
    model = causal_lm(
        ModelConfig(task="causal_lm", num_layers=layers, hidden_size=hidden, num_heads=heads),
        VOCAB,
        0,
        1,
    )
    engine = Engine.create(model, train, 100)
    gen = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
        engine.forward_backward({"input_ids": ids, "labels": ids})
        engine.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    blocks = _blocks(model)
    per_block = sum(p.numel() for p in blocks[0].parameters())
    total = sum(p.numel() for p in model.parameters())
    shape = Shape("gpt2", layers, hidden, heads, VOCAB, per_block,
                  total - per_block * layers, True)  # fmt: skip
    est = estimate(shape, Layout(1, 1, 1, zero), BATCH, SEQ, "fp32")
    return {"measured": peak - before, "estimated": est.total, "states": est.states,
            "activations": est.activations, "logits": est.logits, "params": total}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, JSON on stdout
    args = p.parse_args(argv)
    if args.case:
        layers, hidden, zero = (int(x) for x in args.case.split(","))
        print("RESULT " + json.dumps(_case(layers, hidden, zero)), flush=True)
        return
    from benchmarks.harness import write_results

    rows = []
    for layers, hidden in SIZES:
        for zero in (0, 2):
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.plan_memory", "--case",
                     f"{layers},{hidden},{zero}"],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
                runs.append(json.loads(line[len("RESULT ") :]))
            ratios = [r["measured"] / r["estimated"] for r in runs]
            mid = median(ratios)
            spread = (max(ratios) - min(ratios)) / mid if mid else 0.0
            r0 = runs[0]
            rows.append({
                "case": f"{layers}x{hidden} ZeRO-{zero} ({r0['params'] / 1e6:.1f}M params)",
                "median": mid, "spread": spread, "ratio_vs_baseline": mid,
                "measured_MiB": median(r["measured"] for r in runs) / 2**20,
                "estimated_MiB": r0["estimated"] / 2**20,
                "states_MiB": r0["states"] / 2**20,
                "activations_MiB": r0["activations"] / 2**20,
            })  # fmt: skip
            print(rows[-1], flush=True)
    table = {"baseline": "estimate", "metric": "measured / estimated", "rows": rows}
    notes = {
        "what": "peak RSS growth of one training process vs raylm.plan.estimate (fp32, CPU)",
        "batch": f"{BATCH} x {SEQ} tokens, vocabulary {VOCAB}, {STEPS} steps",
    }
    write_results("plan_memory", table, notes)


if __name__ == "__main__":
    main()
