"""Input wait: share of step time a raylm worker spends waiting for its next batch, streaming
Ray Data input (the trainer's real path) vs in-memory tensors.

    python -m benchmarks.ingest --quick     # a couple of minutes on 2 cores

Streaming: text rows -> `encode_classification` (tokenizer tasks) -> the worker's
`get_dataset_shard("train")` -> raylm's own `_batches` (`iter_torch_batches` + its collate,
local shuffle buffer as the example config). In-memory: the same model on pre-collated tensors.
Both run raylm's step (1 worker, ZeRO-2). Wait = time from the end of one step to the arrival of
the next batch; share = wait / (wait + step) over the steps after `skip` (the first batch, which
includes the pipeline's start, is reported apart as `first_batch_s`).
Writes benchmarks/results/ingest.{json,md}.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.harness import Case, compare, write_results

FILL = list("这本书我们的是了在有和就都而及与着或一个没有看过买来说东西质量很好喜欢满意失望")


def _texts(n: int) -> list[dict[str, Any]]:
    rng = random.Random(0)
    return [
        {"text": "".join(rng.choices(FILL, k=rng.randint(8, common.MAX_LEN))), "label": i % 2}
        for i in range(n)
    ]


def ingest_worker(config: dict[str, Any]) -> None:
    import ray.train
    import torch

    from raylm.tasks import get_task
    from raylm.tasks.base import RunSpec
    from raylm.train.deepspeed import Engine
    from raylm.train.loop import Meter, batches, train_step

    torch.set_num_threads(1)
    cfg = common.train_config(1, 2, config["steps"])
    cfg = cfg.model_copy(update={"shuffle_buffer": 256})
    engine = Engine.create(common.make_model(), cfg, config["steps"])
    meter = Meter(1.0, 1e11)
    if config["stream"]:
        shard = ray.train.get_dataset_shard("train")
        spec = RunSpec("classification", 0, common.PAD, None, 2, None, 0, 0, 0)
        collate = get_task("classification").collate
        source = iter(batches(shard, cfg, collate, 0, spec, True))
    else:
        data = common.batches(8)
        source = (data[i % len(data)] for i in range(config["steps"]))
    waits, steps = [], []
    t_end = time.perf_counter()
    for _ in range(config["steps"]):
        batch = next(source, None)
        if batch is None:
            break
        t_got = time.perf_counter()
        train_step(engine, meter, batch)
        if engine.global_step % cfg.log_every == 0:
            meter.read()
        waits.append(t_got - t_end)
        t_end = time.perf_counter()
        steps.append(t_end - t_got)
    k = config["skip"]
    wait, work = sum(waits[k:]), sum(steps[k:])
    common.put(
        config,
        {
            "step_s": (wait + work) / max(1, len(steps) - k),
            "wait_share": wait / max(wait + work, 1e-9),
            "wait_max_s": max(waits[k:], default=0.0),
            "first_batch_s": waits[0],
            "steps_timed": float(len(steps) - k),
        },
    )


def ingest_case(stream: bool, steps: int, skip: int, datasets: dict | None) -> dict[str, float]:
    import ray.train
    from ray.data import ExecutionOptions

    data_config = ray.train.DataConfig(
        execution_options=ExecutionOptions(preserve_order=True), enable_shard_locality=False
    )
    m = common.fit(
        ingest_worker,
        {"stream": stream, "steps": steps, "skip": skip},
        1,
        datasets=datasets() if stream else None,
        dataset_config=data_config,
    )
    keys = ("step_s", "wait_share", "wait_max_s", "first_batch_s", "wall_s")
    return {k: float(m[k]) for k in keys}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args(argv)
    steps, skip, repeats = (40, 5, 2) if args.quick else (150, 10, 4)
    common.start_ray()
    import ray.data

    from raylm.config import TokenizerConfig
    from raylm.data.pipeline import encode_classification
    from raylm.data.tokenizer import train_tokenizer

    rows = _texts(steps * common.BATCH)
    tok_dir = Path(tempfile.mkdtemp(prefix="raylm-ingest-tok-"))
    train_tokenizer(
        [r["text"] for r in rows], TokenizerConfig(vocab_size=300, min_frequency=1), tok_dir
    )

    def datasets() -> dict:
        return {"train": encode_classification(ray.data.from_items(rows), tok_dir, common.MAX_LEN)}

    cases = [
        Case("in_memory", lambda: ingest_case(False, steps, skip, None)),
        Case("ray_data_stream", lambda: ingest_case(True, steps, skip, datasets)),
    ]
    table = compare(cases, repeats=repeats, warmup=0, baseline="in_memory")
    notes = {
        "setup": "1 worker, ZeRO-2, batch 32, 8..64 tokens, local shuffle buffer 256",
        "wait_share": "time waiting for the next batch / total step time (target <= 5%)",
        "steps": f"{steps} per run, first {skip} not counted; {repeats} interleaved repeats",
    }
    write_results("ingest", table, notes)
    return {"ingest": table}


if __name__ == "__main__":
    main()
