"""Shared pieces of the training benchmarks: the tiny BERT classifier, synthetic token batches,
a local Ray, the per-step timing rule (steady state = every step after `skip`), and the Ray
nodes' Prometheus export (`node_metrics`).

Not run directly; see benchmarks/train_step.py and benchmarks/ingest.py.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VOCAB, PAD, BATCH, MAX_LEN, SEED = 6000, 0, 32, 64, 0


SIZES = {"2x128": (2, 128, 2), "4x256": (4, 256, 4), "6x512": (6, 512, 8)}  # layers, hidden, heads


def make_model(size: str = "2x128"):
    """The BERT classifier at one of SIZES (the default: raylm's tiny preset)."""
    import torch

    from raylm.config import ModelConfig
    from raylm.tasks import build_model

    layers, hidden, heads = SIZES[size]
    torch.manual_seed(SEED)
    cfg = ModelConfig(task="classification", preset="tiny", num_layers=layers,
                      hidden_size=hidden, num_heads=heads)  # fmt: skip
    return build_model(cfg, VOCAB, 2, PAD)


def token_rows(n: int, seed: int = SEED) -> list[dict[str, Any]]:
    """Rows as Ray Data's encoder yields them: variable-length int32 ids (8..MAX_LEN) + label."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, MAX_LEN + 1, size=n)
    return [
        {"input_ids": rng.integers(5, VOCAB, size=int(k), dtype=np.int32), "labels": int(k % 2)}
        for k in lengths
    ]


def batches(n: int) -> list[dict[str, Any]]:
    """`n` model-ready batches, padded by raylm's own collate (identical for every case)."""
    import numpy as np

    from raylm.data.collate import collate_classification

    rows = token_rows(n * BATCH)
    out = []
    for i in range(n):
        chunk = rows[i * BATCH : (i + 1) * BATCH]
        raw = {
            "input_ids": [r["input_ids"] for r in chunk],
            "labels": np.array([r["labels"] for r in chunk], dtype=np.int64),
        }
        out.append(collate_classification(raw, PAD))
    return out


def train_config(workers: int, zero: int, steps: int):
    from raylm.config import TrainConfig

    return TrainConfig(
        num_workers=workers,
        cpus_per_worker=1,
        batch_size=BATCH,
        zero_stage=zero,
        lr=1e-3,
        max_steps=steps,
        peak_flops=1e11,  # skip the matmul probe: MFU is not what these benchmarks compare
        log_every=20,
        shuffle_buffer=0,
    )


def steady(times: list[float], skip: int) -> dict[str, float]:
    """Mean seconds per step after `skip` warm-up steps (mean, not median: stalls count)."""
    rest = times[skip:] or times
    return {
        "step_s": sum(rest) / len(rest),
        "step_median_s": statistics.median(rest),
        "steps_timed": float(len(rest)),
    }


def single_process_group() -> None:
    """A gloo process group of one (as Ray Train makes for a CPU worker group), on a free port;
    one thread, so timings and memory are one worker's."""
    import socket

    import torch
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo")


def spawn_pair(target, *args) -> tuple[list[Any], float]:
    """Run `target(rank, port, *args, queue)` in two spawned processes (a gloo pair on a free
    local port, as DDP baselines need); returns what each put on `queue`, in arrival order,
    and the time.time() they were launched at."""
    import socket

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = ctx.SimpleQueue()
    launched = time.time()
    procs = [ctx.Process(target=target, args=(r, port, *args, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    got = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return got, launched


def start_ray(num_cpus: int = 4) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # quicker fit() exits
    for attempt in range(3):  # ray.init gives the raylet a fixed 30 s; loaded hosts miss it
        try:
            ray.init(
                num_cpus=num_cpus,
                log_to_driver=False,
                runtime_env={
                    "env_vars": {
                        "PYTHONPATH": str(ROOT),
                        "OMP_NUM_THREADS": "1",
                        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
                    }
                },
            )
            return
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise


def fit(
    worker,
    loop_config: dict,
    workers: int,
    datasets: dict | None = None,
    use_gpu: bool = False,
    **kw,
) -> dict:
    """One TorchTrainer run of `worker`; returns the last reported metrics + wall seconds."""
    import tempfile

    import ray.train
    from ray.train.torch import TorchTrainer

    t0 = time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix="raylm-bench-"))
    trainer = TorchTrainer(
        worker,
        train_loop_config={**loop_config, "out": str(out / "metrics.json")},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}
        ),
        run_config=ray.train.RunConfig(storage_path=str(out), name="bench"),
        datasets=datasets,
        **kw,
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    metrics = json.loads((out / "metrics.json").read_text())
    return {**metrics, "wall_s": time.perf_counter() - t0}


def put(config: dict, metrics: dict) -> None:
    """Rank 0 hands its metrics back (Train V2 keeps none from checkpoint-less reports)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        Path(config["out"]).write_text(json.dumps(metrics))


def node_metrics() -> list[str]:
    """Every live Ray node's Prometheus export, one text per node (`ray.init` first)."""
    import ray

    texts = []
    for node in ray.nodes():
        port = node.get("MetricsExportPort")
        if node.get("Alive") and port:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                texts.append(r.read().decode())
    return texts
