"""One-GPU training step: raylm (TorchTrainer + DeepSpeed ZeRO-2, bf16) vs plain PyTorch.

    python -m benchmarks.gpu_train_step                 # GPT ~355M (24 x 1024), seq 1024, bf16
    python -m benchmarks.gpu_train_step --layers 24 --hidden 2048 --heads 16   # ~1.2B
    python -m benchmarks.gpu_train_step --smoke         # tiny model on CPU: checks the code paths

For an H100/H200-class GPU. Both cases train the same GPT-2-style causal LM (built from a config,
random weights, vocabulary 50,304) on the same random token blocks:
  * plain_pytorch: one spawned process (no Ray), fp32 master weights under bf16 autocast, fused
    AdamW, gradient clipping 1.0, linear LR schedule: the usual hand-written mixed-precision loop;
  * raylm_zero2_bf16: a 1-GPU TorchTrainer worker running raylm's step (`Engine.forward_backward`,
    `Meter.add`, `Engine.step`, a `Meter.read` every 10 steps), DeepSpeed ZeRO-2 with bf16.
Steady state = the mean step after the warm-up steps, synchronised on the GPU. Reports tokens/s,
MFU (raylm.train.flops: 6N + 12*L*H*T per token against the GPU's dense bf16 peak from the table,
or --peak-tflops), peak GPU memory, and raylm/plain step time (target <= 1.05, MFU >= 45%).
Writes benchmarks/results/gpu_train_step.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from benchmarks import common
from benchmarks.harness import Case, compare, write_results

VOCAB = 50_304  # GPT-2's 50,257 rounded up to a multiple of 64 (tensor-core friendly)


def model_config(a: dict[str, Any]):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=VOCAB,
        n_positions=a["seq"],
        n_embd=a["hidden"],
        n_layer=a["layers"],
        n_head=a["heads"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        use_cache=False,
    )


def build(a: dict[str, Any]):
    import torch
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(model_config(a))


def flops_token(a: dict[str, Any]) -> tuple[float, int]:
    """(training FLOPs per token, non-embedding parameters), counted on a meta-device build."""
    import torch

    from raylm.models.build import count_parameters
    from raylm.train.flops import flops_per_token

    with torch.device("meta"):
        n = count_parameters(build(a), exclude_embeddings=True)
    return flops_per_token(n, a["layers"], a["hidden"], a["seq"]), n


def batches(a: dict[str, Any], device: Any, n: int = 4) -> list[dict[str, Any]]:
    import torch

    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (a["batch"], a["seq"]), generator=gen)
        mask = torch.ones_like(ids)  # full blocks, as packing makes them
        out.append(
            {
                "input_ids": ids.to(device),
                "attention_mask": mask.to(device),
                "labels": ids.to(device),
            }
        )
    return out


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _result(a: dict[str, Any], times: list[float], startup: float, device: Any) -> dict:
    import torch

    res = common.steady(times, a["warmup"])
    tokens_s = a["batch"] * a["seq"] / res["step_s"]
    f_tok, peak = a["flops_token"], a["peak"]
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return {
        **res,
        "tokens_per_s": tokens_s,
        "mfu_pct": 100.0 * tokens_s * f_tok / peak if peak else 0.0,
        "peak_mem_gib": mem,
        "startup_s": startup,
    }


def _plain_proc(a: dict[str, Any], queue) -> None:
    """The plain loop, in its own process (spawned: a fresh CUDA context, no Ray)."""
    import torch

    from raylm.config import TrainConfig
    from raylm.train.deepspeed import lr_lambda

    t0 = time.perf_counter()
    device = torch.device("cuda" if a["gpu"] else "cpu")
    model = build(a).to(device).train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=3e-4, weight_decay=0.01, fused=device.type == "cuda"
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(TrainConfig(lr=3e-4, warmup_ratio=0.0), a["steps"])
    )
    data = batches(a, device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=a["bf16"])
    startup = time.perf_counter() - t0
    times = []
    for i in range(a["steps"]):
        _sync(device)
        s = time.perf_counter()
        with amp:
            loss = model(**data[i % len(data)]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (i + 1) % 10 == 0:
            loss.item()  # what a loop that logs every 10 steps syncs on
        _sync(device)
        times.append(time.perf_counter() - s)
    queue.put(_result(a, times, startup, device))


def plain_case(a: dict[str, Any]) -> dict[str, float]:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    proc = ctx.Process(target=_plain_proc, args=(a, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def raylm_worker(config: dict[str, Any]) -> None:
    """Inside a 1-GPU TorchTrainer worker: raylm's engine and meter on in-memory batches."""

    from raylm.config import TrainConfig
    from raylm.train.deepspeed import Engine
    from raylm.train.loop import Meter, train_step

    a = config["args"]
    t0 = time.perf_counter()
    cfg = TrainConfig(
        use_gpu=a["gpu"],
        precision="bf16" if a["bf16"] else "fp32",
        zero_stage=2,
        batch_size=a["batch"],
        lr=3e-4,
        warmup_ratio=0.0,
        max_steps=a["steps"],
        log_every=10,
        peak_flops=a["peak"] or 1e12,
    )
    engine = Engine.create(build(a), cfg, a["steps"])
    meter = Meter(a["flops_token"], cfg.peak_flops)
    data = batches(a, engine.device)
    startup = time.perf_counter() - t0
    times = []
    for i in range(a["steps"]):
        _sync(engine.device)
        s = time.perf_counter()
        train_step(engine, meter, data[i % len(data)])
        if engine.global_step % cfg.log_every == 0:
            meter.read()
        _sync(engine.device)
        times.append(time.perf_counter() - s)
    common.put(config, _result(a, times, startup, engine.device))


def raylm_case(a: dict[str, Any]) -> dict[str, float]:
    m = common.fit(raylm_worker, {"args": a}, 1, use_gpu=a["gpu"])
    return {k: float(v) for k, v in m.items() if isinstance(v, int | float)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=None, help="default: the GPU table")
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU, fp32")
    args = p.parse_args(argv)
    import torch

    from raylm.train.flops import gpu_peak_flops

    a = {k: getattr(args, k) for k in ("layers", "hidden", "heads", "seq", "batch", "steps")}
    a.update(warmup=args.warmup, gpu=not args.smoke, bf16=not args.smoke)
    if args.smoke:
        a.update(layers=2, hidden=64, heads=2, seq=64, batch=4, steps=6, warmup=2)
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --smoke to check the code paths on CPU")
    name = torch.cuda.get_device_name() if a["gpu"] else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (gpu_peak_flops(name) or 0.0)
    a["peak"] = peak
    f_tok, n = flops_token(a)  # once: every case and worker reads a["flops_token"]
    a["flops_token"] = f_tok
    print(f"{name}: GPT {a['layers']}x{a['hidden']} ({n / 1e6:.0f}M non-embedding params), "
          f"{f_tok / 1e9:.2f} GFLOP/token, peak {peak / 1e12:.0f} TFLOP/s", flush=True)  # fmt: skip

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    common.start_ray(num_cpus=2 if args.smoke else 8)
    cases = [
        Case("plain_pytorch", lambda: plain_case(a)),
        Case("raylm_zero2", lambda: raylm_case(a)),
    ]
    table = compare(cases, repeats=1 if args.smoke else args.repeats, warmup=0,
                    baseline="plain_pytorch")  # fmt: skip
    notes = {
        "device": name,
        "model": f"GPT-2 style {a['layers']} layers x {a['hidden']}, {n / 1e6:.0f}M non-emb.",
        "step": f"{a['batch']} x {a['seq']} tokens, {'bf16' if a['bf16'] else 'fp32'}",
        "flops_per_token": f"{f_tok:.3e}",
        "peak_flops": f"{peak:.3e}",
        "targets": "raylm/plain step <= 1.05; MFU >= 45%",
    }
    write_results("gpu_train_step_smoke" if args.smoke else "gpu_train_step", table, notes)


if __name__ == "__main__":
    main()
