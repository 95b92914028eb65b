"""The QA recipe's loss: the model's own (logits at every position) vs raylm's labelled-only,
chunked loss (raylm.train.lm_loss), side by side on the same batches.

    python -m benchmarks.lm_loss                 # preprocesses examples/qa_cmrc.yaml once
    python -m benchmarks.lm_loss --repeats 5 --batches 12

Real features: the QA recipe's train split (CMRC 2018 trial, prompt-masked: labels only on the
answer tokens), preprocessed by the recipe itself into --work. The model is the recipe's (tiny
GPT-2 preset, vocab 6,000, max_length 384, batch 8), one thread, as one training worker has.
Each case times forward + backward over the same batches, interleaved (harness.compare);
tokens/s counts the batch's real tokens. Peak memory: each case again in a fresh process, the
peak resident set during its steps minus the resident set before them (the peak is reset after
loading: Linux's /proc/self/clear_refs). The loss of the two
agrees to 1e-6 (relative) on every batch, or the benchmark stops.
Writes benchmarks/results/lm_loss.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Case, compare, write_results

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "qa_cmrc.yaml"


def _prepare(work: Path) -> Path:
    """The recipe's preprocessed data folder under `work` (preprocessed once)."""
    from raylm.recipe import load_config

    cfg = load_config(str(RECIPE), [f"run.output_dir={work}", "run.num_cpus=2"])
    if not (cfg.run.data_path / "stats.json").is_file():
        from raylm import stages

        stages.preprocess(cfg)
    return cfg.run.data_path


def _batches(data_dir: Path, n: int, batch_size: int) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from raylm.data.collate import collate_lm

    folder = data_dir / "encoded" / "train"
    if not folder.is_dir():
        folder = data_dir / "train"
    table = pq.read_table(folder, columns=["input_ids", "labels"]).to_pydict()
    out = []
    for i in range(n):
        rows = slice(i * batch_size, (i + 1) * batch_size)
        out.append(collate_lm({k: v[rows] for k, v in table.items()}, 0))
    return out


def _model(data_dir: Path):
    import torch

    from raylm.data.tokenizer import load_tokenizer
    from raylm.recipe import load_config
    from raylm.tasks import get_task

    cfg = load_config(str(RECIPE), [])
    tok = load_tokenizer(str(data_dir / "tokenizer"))
    torch.manual_seed(0)
    build = get_task("qa").build_model
    return build(cfg.model, len(tok), 2, tok.pad_token_id or 0, tok.eos_token_id)


def _step(model, batch, labelled: bool) -> float:
    from raylm.train.lm_loss import labelled_loss

    loss = labelled_loss(model, batch) if labelled else model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return loss.item()


def _run(model, batches, labelled: bool) -> dict[str, float]:
    t0 = time.perf_counter()
    for b in batches:
        _step(model, b, labelled)
    dt = time.perf_counter() - t0
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    return {"tokens_per_s": tokens / dt}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int:
    """Reset this process's peak resident set (Linux: VmHWM) to now; returns the RSS in kB, so
    that loading the data and the model does not count toward the steps' peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def _peak_mb(data_dir: Path, n: int, batch_size: int, labelled: bool) -> float:
    """Peak resident memory of the steps, in a fresh process (MB above the model and data)."""
    code = (
        "import torch; from pathlib import Path; torch.set_num_threads(1);"
        "from benchmarks import lm_loss as m;"
        f"d = Path({str(data_dir)!r}); bs = m._batches(d, {n}, {batch_size}); mod = m._model(d);"
        "before = m._reset_peak();"
        f"[m._step(mod, b, {labelled}) for b in bs];"
        "print((m._status_kb('VmHWM') - before) / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/raylm-bench-qa", help="where the data goes")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 repeats (make bench)")
    args = parser.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 3)
    import torch

    torch.set_num_threads(1)
    data_dir = _prepare(Path(args.work))
    batches = _batches(data_dir, args.batches, args.batch_size)
    model = _model(data_dir).eval()  # no dropout: both losses see the same network
    diffs = []
    for b in batches:
        a, c = _step(model, b, False), _step(model, b, True)
        diffs.append(abs(a - c) / abs(a))
    if max(diffs) > 1e-6:
        raise SystemExit(f"the losses differ: max relative difference {max(diffs):.2e}")
    model.train()
    labelled_share = sum(int((b["labels"] != -100).sum()) for b in batches) / sum(
        int(b["attention_mask"].sum()) for b in batches
    )
    cases = [
        Case("model's loss (all logits)", lambda: _run(model, batches, False)),
        Case("labelled-only, chunked", lambda: _run(model, batches, True)),
    ]
    table = compare(cases, repeats=args.repeats, lower_is_better=False)
    peaks = [_peak_mb(data_dir, args.batches, args.batch_size, flag) for flag in (False, True)]
    for row, peak in zip(table["rows"], peaks, strict=True):
        row["peak_step_mb"] = peak
    notes = {
        "data": "QA recipe train split (CMRC 2018 trial), prompt-masked features",
        "batches": f"{args.batches} x {args.batch_size} rows, max_length 384",
        "labelled share of tokens": f"{labelled_share:.3f}",
        "loss agreement": f"max relative difference {max(diffs):.1e} over {len(diffs)} batches",
        "peak_step_mb": "peak RSS during the steps (VmHWM reset after loading) minus RSS before",
        "command": "python -m benchmarks.lm_loss " + " ".join(sys.argv[1:]),
    }
    write_results("lm_loss", table, notes)
    print(json.dumps({"peaks_mb": peaks}))


if __name__ == "__main__":
    main()
