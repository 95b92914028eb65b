"""A language model's own loss (logits at every position) vs raylm's labelled-only, chunked loss
(raylm.train.lm_loss), side by side on the same batches, for the two recipes whose labels are
mostly -100.

    python -m benchmarks.lm_loss                 # both (each recipe preprocessed once)
    python -m benchmarks.lm_loss --task qa       # QA: examples/qa_cmrc.yaml
    python -m benchmarks.lm_loss --task mlm      # masked LM: examples/bert_pretrain_zh.yaml
    python -m benchmarks.lm_loss --repeats 5 --batches 12

Real features, preprocessed by the recipe itself into --work:
- qa: the QA recipe's train split (CMRC 2018 trial, prompt-masked: labels only on the answer
  tokens); its model (tiny GPT-2 preset, vocab 6,000, max_length 384), batch 8.
- mlm: the masked-LM recipe's packed blocks (its first --mlm-limit documents of People's Daily,
  its own tokenizer trained on them; no other source), masked by the recipe's collate (15%,
  whole words); its model (tiny BERT preset), 128-token blocks, batch 32 (the recipe's).
One thread, as one training worker has. Each case times forward + backward over the same
batches, interleaved (harness.compare); tokens/s counts the batch's real tokens. Peak memory:
each case again in a fresh process, the peak resident set during its steps minus the resident
set before them (the peak is reset after loading: Linux's /proc/self/clear_refs). The loss of
the two agrees to 1e-6 (relative) on every batch, or the benchmark stops.
Writes benchmarks/results/lm_loss.json / .md (qa) and lm_loss_mlm.json / .md (mlm).
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
RECIPES = {
    "qa": ROOT / "examples" / "qa_cmrc.yaml",
    "mlm": ROOT / "examples" / "bert_pretrain_zh.yaml",
}
MLM_LIMIT = 6000  # People's Daily documents: about 2,000 blocks of 128 tokens


def _overrides(task: str) -> list[str]:
    if task == "mlm":  # one source, no downstream recipes to hold out: the batches' shape is all
        return [f"data.limit={MLM_LIMIT}", "data.also=[]", "data.heldout_of=[]"]
    return []


def _prepare(task: str, work: Path) -> Path:
    """The recipe's preprocessed data folder under `work` (preprocessed once)."""
    from raylm.recipe import load_config

    where = [f"run.output_dir={work}", "run.num_cpus=2"]
    cfg = load_config(str(RECIPES[task]), where + _overrides(task))
    if not (cfg.run.data_path / "stats.json").is_file():
        from raylm import stages

        stages.preprocess(cfg)
    return cfg.run.data_path


def _batches(task: str, data_dir: Path, n: int, batch_size: int) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from raylm.data.collate import collate_lm
    from raylm.data.mlm import collate_mlm
    from raylm.data.tokenizer import load_tokenizer

    folder = data_dir / "encoded" / "train"
    if not folder.is_dir():
        folder = data_dir / "train"
    columns = ["input_ids", "words"] if task == "mlm" else ["input_ids", "labels"]
    table = pq.read_table(folder, columns=columns).to_pydict()
    tok = load_tokenizer(str(data_dir / "tokenizer")) if task == "mlm" else None
    out = []
    for i in range(n):
        rows = {k: v[i * batch_size : (i + 1) * batch_size] for k, v in table.items()}
        if task == "mlm":
            out.append(collate_mlm(rows, tok.pad_token_id, tok.mask_token_id, len(tok), i, 0.15))
        else:
            out.append(collate_lm(rows, 0))
    return out


def _model(task: str, data_dir: Path):
    import torch

    from raylm.data.tokenizer import load_tokenizer
    from raylm.recipe import load_config
    from raylm.tasks import get_task

    cfg = load_config(str(RECIPES[task]), _overrides(task))
    tok = load_tokenizer(str(data_dir / "tokenizer"))
    torch.manual_seed(0)
    build = get_task(task).build_model
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


def _peak_mb(task: str, data_dir: Path, n: int, batch_size: int, labelled: bool) -> float:
    """Peak resident memory of the steps, in a fresh process (MB above the model and data)."""
    code = (
        "import torch; from pathlib import Path; torch.set_num_threads(1);"
        "from benchmarks import lm_loss as m;"
        f"d = Path({str(data_dir)!r}); bs = m._batches({task!r}, d, {n}, {batch_size});"
        f"mod = m._model({task!r}, d);"
        "before = m._reset_peak();"
        f"[m._step(mod, b, {labelled}) for b in bs];"
        "print((m._status_kb('VmHWM') - before) / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def bench(task: str, args: argparse.Namespace) -> None:
    """One recipe's side-by-side comparison; writes its results file."""
    import torch

    torch.set_num_threads(1)
    batch_size = args.batch_size or {"qa": 8, "mlm": 32}[task]
    data_dir = _prepare(task, Path(args.work or f"/tmp/raylm-bench-{task}"))
    batches = _batches(task, data_dir, args.batches, batch_size)
    model = _model(task, data_dir).eval()  # no dropout: both losses see the same network
    diffs = []
    for b in batches:
        a, c = _step(model, b, False), _step(model, b, True)
        diffs.append(abs(a - c) / abs(a))
    if max(diffs) > 1e-6:
        raise SystemExit(f"{task}: the losses differ: max relative difference {max(diffs):.2e}")
    model.train()
    labelled_share = sum(int((b["labels"] != -100).sum()) for b in batches) / sum(
        int(b["attention_mask"].sum()) for b in batches
    )
    cases = [
        Case("model's loss (all logits)", lambda: _run(model, batches, False)),
        Case("labelled-only, chunked", lambda: _run(model, batches, True)),
    ]
    table = compare(cases, repeats=args.repeats, lower_is_better=False)
    peaks = [_peak_mb(task, data_dir, args.batches, batch_size, flag) for flag in (False, True)]
    for row, peak in zip(table["rows"], peaks, strict=True):
        row["peak_step_mb"] = peak
    data = {
        "qa": "QA recipe train split (CMRC 2018 trial), prompt-masked features, max_length 384",
        "mlm": f"masked-LM recipe's blocks of 128 tokens (first {MLM_LIMIT} People's Daily "
        "documents), whole-word masked 15%",
    }
    notes = {
        "data": data[task],
        "batches": f"{args.batches} x {batch_size} rows",
        "labelled share of tokens": f"{labelled_share:.3f}",
        "loss agreement": f"max relative difference {max(diffs):.1e} over {len(diffs)} batches",
        "peak_step_mb": "peak RSS during the steps (VmHWM reset after loading) minus RSS before",
        "command": "python -m benchmarks.lm_loss " + " ".join(sys.argv[1:]),
    }
    write_results("lm_loss" if task == "qa" else f"lm_loss_{task}", table, notes)
    print(json.dumps({"task": task, "peaks_mb": peaks}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=[*sorted(RECIPES), "both"], default="both")
    parser.add_argument("--work", default=None, help="where the data goes (/tmp/raylm-bench-TASK)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None, help="qa 8, mlm 32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 repeats (make bench)")
    args = parser.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 3)
    for task in ("qa", "mlm") if args.task == "both" else (args.task,):
        bench(task, args)


if __name__ == "__main__":
    main()
