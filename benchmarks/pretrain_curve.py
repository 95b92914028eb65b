"""Fine-tuned test accuracy against pretraining steps: the masked-LM recipe pretrained once,
keeping its checkpoint of every epoch; the sentiment fine-tune recipe run from some of them, and
from the same encoder untrained (step 0); each fine-tune's test accuracy beside the TF-IDF +
logistic-regression baseline's on the same deduplicated split, which pretraining never reads.

    python -m benchmarks.pretrain_curve                     # about 60 min on 2 cores
    python -m benchmarks.pretrain_curve --points 2          # the last checkpoint and one between
    python -m benchmarks.pretrain_curve --work DIR          # reuses a pretraining already in DIR

Each point is one fine-tune (the recipe's seed): the spread between two fine-tunes of the same
export has been 1-2 points of accuracy, so read the curve's trend, not one step against the next.
Writes benchmarks/results/pretrain_curve.json / .md / .png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS

ROOT = Path(__file__).resolve().parent.parent
PRETRAIN = ROOT / "examples" / "bert_pretrain_zh.yaml"
FINETUNE = ROOT / "examples" / "sentiment_zh_finetune.yaml"


def pretrain(work: Path) -> tuple[Any, dict[int, float]]:
    """The pretraining run in `work` (trained here unless it finished there before), and its
    validation masked-token accuracy at each checkpoint's step."""
    from raylm import stages
    from raylm.recipe import load_config

    cfg = load_config(str(PRETRAIN), [f"run.output_dir={work}"])
    cfg.train.keep_checkpoints = cfg.train.epochs + 1  # every epoch's checkpoint
    result = stages.run_dir_of(cfg) / "train_result.json"
    if not result.is_file():
        stages.preprocess(cfg)
        stages.train(cfg)
    history = json.loads(result.read_text(encoding="utf-8"))["history"]
    accuracy = {r["step"]: r["val_masked_accuracy"] for r in history if "val_masked_accuracy" in r}
    return cfg, accuracy


def untrained(cfg: Any, out: Path) -> Path:
    """The pretraining recipe's encoder as initialised (its seed), with its tokenizer: step 0."""
    import torch

    from raylm import stages
    from raylm.data.tokenizer import load_tokenizer
    from raylm.models.build import masked_lm

    tok = load_tokenizer(str(stages.data_dir_of(cfg) / "tokenizer"))
    torch.manual_seed(cfg.train.seed)
    model = masked_lm(cfg.model, len(tok), tok.pad_token_id)
    model.save_pretrained(out)  # safetensors
    tok.save_pretrained(out)
    return out


def finetune(work: Path, name: str, model_dir: Path) -> dict[str, Any]:
    """The fine-tune recipe from `model_dir` (its encoder and tokenizer): test and baseline."""
    from raylm import stages
    from raylm.recipe import load_config

    where = [f"run.output_dir={work}", f"run.name={name}", f"model.path={model_dir}",
             f"data.tokenizer.path={model_dir}"]  # fmt: skip
    cfg = load_config(str(FINETUNE), where)
    t0 = time.perf_counter()
    metrics = stages.run(cfg)
    best = json.loads((stages.run_dir_of(cfg) / "train_result.json").read_text())["best_metrics"]
    return {
        "test_accuracy": metrics["test"]["accuracy"],
        "test_f1": metrics["test"]["f1"],
        "baseline_accuracy": metrics["baseline"]["test"]["accuracy"],
        "best_val_accuracy": best.get("val_accuracy"),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def choose(steps: list[int], points: int | None) -> list[int]:
    """`points` of the checkpoints' steps, spread evenly and always with the last one."""
    if not points or points >= len(steps):
        return steps
    stride = len(steps) / points
    return sorted({steps[len(steps) - 1 - round(i * stride)] for i in range(points)})


def plot(rows: list[dict[str, Any]], masked: dict[int, float], path: Path) -> None:
    """Test accuracy of each fine-tune (left axis) and the pretraining's validation masked-token
    accuracy at every checkpoint (right axis) against pretraining steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    steps = [r["pretrain_step"] for r in rows]
    ax.plot(steps, [r["test_accuracy"] for r in rows], "o-", label="fine-tuned, test accuracy")
    ax.axhline(rows[0]["baseline_accuracy"], color="gray", ls="--", label="TF-IDF + LR baseline")
    ax.set_xlabel("pretraining steps (masked LM)")
    ax.set_ylabel("sentiment test accuracy")
    if masked:
        right = ax.twinx()
        steps = sorted(masked)
        right.plot(steps, [masked[s] for s in steps], "s:", color="tab:orange")
        right.set_ylabel("pretraining: val masked-token accuracy (squares)", color="tab:orange")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Fine-tuned accuracy against pretraining steps")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    from raylm.train.checkpoint import checkpoint_root, list_checkpoints

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/raylm-pretrain-curve"))
    ap.add_argument("--points", type=int, default=3, help="checkpoints fine-tuned (0: all)")
    ap.add_argument("--no-scratch", action="store_true", help="no step-0 fine-tune")
    args = ap.parse_args()
    from raylm import stages
    from raylm.models.export import export_model

    cfg, masked = pretrain(args.work)
    run_dir = stages.run_dir_of(cfg)
    complete = {r["step"]: r["checkpoint"] for r in list_checkpoints(run_dir)
                if r["state"] == "complete"}  # fmt: skip
    rows = []
    todo = ([0] if not args.no_scratch else []) + choose(sorted(complete), args.points)
    for step in todo:
        folder = args.work / "curve" / f"step{step:06d}"
        if step == 0:
            model_dir = untrained(cfg, folder / "model")
        else:
            ckpt = checkpoint_root(run_dir) / complete[step]
            model_dir = export_model(ckpt, stages.data_dir_of(cfg) / "tokenizer", folder / "model")
        row = {"pretrain_step": step, "val_masked_accuracy": masked.get(step)}
        row.update(finetune(args.work, f"finetune_step{step:06d}", model_dir))
        rows.append(row)
        print(f"[pretrain_curve] step {step}: {row}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"name": "pretrain_curve", "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "pretrain": str(PRETRAIN.relative_to(ROOT)),
               "finetune": str(FINETUNE.relative_to(ROOT)), "points": rows,
               "val_masked_accuracy": {str(k): v for k, v in sorted(masked.items())}}  # fmt: skip
    (RESULTS / "pretrain_curve.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    head = "| pretraining step | val masked acc | test acc | test F1 | baseline acc | fine-tune s |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        m = r["val_masked_accuracy"]
        lines.append(f"| {r['pretrain_step']} | {'-' if m is None else f'{m:.4f}'} | "
                     f"{r['test_accuracy']:.4f} | {r['test_f1']:.4f} | "
                     f"{r['baseline_accuracy']:.4f} | {r['seconds']:.0f} |")  # fmt: skip
    (RESULTS / "pretrain_curve.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(rows, masked, RESULTS / "pretrain_curve.png")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
