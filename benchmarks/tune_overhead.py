"""Tune sweep overhead and ASHA's savings, side by side on one embedded Ray.

    python -m benchmarks.tune_overhead --quick     # ~35 min on 2 cores (--only asha|overhead)
    python -m benchmarks.tune_overhead --quick --only asha --epochs 4   # a shorter max_t
    python -m benchmarks.tune_overhead             # 3 repeats on a larger corpus

(a) `tune_overhead`: wall time of N short trials run as a sweep, divided by ceil(N / slots),
    against one trial alone: a ratio of 1.0 means the sweep adds nothing over its trials.
(b) `tune_asha`: the same random search (ranked by validation loss) with ASHA and without early
    stopping: total trial-epochs trained (the cost), the best validation loss and the winner's
    validation accuracy at that checkpoint (the outcome). ASHA saves more the longer a full trial
    is against its grace period: 8 epochs (rungs at 1 and 4) by default.
Trials are 1-worker TorchTrainer + DeepSpeed ZeRO-2 runs of a tiny classifier on a generated
corpus (the tests' recipe), preprocessed once and shared by every sweep.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Case, compare, write_results
from raylm.data.synthetic import sentiment_recipe, write_sentiment_corpus

_ids = itertools.count()
# Ray's default reduction factor (4): rungs at epochs 1, 4, 16..., the best quarter goes on at each.
ASHA = {"grace_period": 1, "reduction_factor": 4}


def _cfg(tmp: Path, tune: dict, epochs: int) -> dict:
    train = {
        "epochs": epochs,
        "log_every": 50,
        "keep_checkpoints": 1,
        "best_metric": "val_accuracy",
    }
    recipe = sentiment_recipe(tmp, f"bench{next(_ids)}", runs="sweeps", **train)
    return {**recipe, "tune": tune}


def _sweep(tmp: Path, tune: dict, epochs: int) -> dict[str, float]:
    from raylm.recipe import config_from_dict
    from raylm.tune.search import run_sweep

    t0 = time.perf_counter()
    result = run_sweep(config_from_dict(_cfg(tmp, tune, epochs)))
    wall = time.perf_counter() - t0
    # The winner's validation accuracy where its sweep metric was best (its exported checkpoint).
    history = json.loads((result.sweep_dir / "best" / "train_result.json").read_text())["history"]
    metric = tune.get("metric", "val_accuracy")
    at_best = next(h for h in history if h.get(metric) == result.best_metric)
    return {
        "wall_s": wall,
        "trial_epochs": sum(r["epochs_run"] for r in result.rows),
        "best": result.best_metric,
        "winner_val_accuracy": at_best["val_accuracy"],
        "trials": len(result.rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one repeat, a smaller corpus")
    ap.add_argument("--only", choices=["overhead", "asha"], help="run one of the two parts")
    ap.add_argument("--trials", type=int, default=16, help="trials per sweep (default 16)")
    ap.add_argument("--epochs", type=int, default=8, help="epochs per ASHA-benchmark trial (max_t)")
    args = ap.parse_args()
    n, slots, epochs = args.trials, 2, args.epochs
    rows, repeats = (800, 1) if args.quick else (1600, 3)

    import ray

    from raylm import stages
    from raylm.recipe import config_from_dict

    ray.init(num_cpus=2 * slots, include_dashboard=True)
    tmp = Path(tempfile.mkdtemp(prefix="raylm_tune_bench_"))
    # Noisy labels (15%) so learning rates differ in outcome, not only in speed.
    write_sentiment_corpus(tmp / "corpus.jsonl", rows, noise=0.15)
    stages.preprocess(config_from_dict(_cfg(tmp, None, epochs)))

    fixed = {"space": {"train.seed": {"choice": [1, 2, 3]}}, "scheduler": "none"}

    def one() -> dict[str, float]:
        r = _sweep(tmp, {**fixed, "num_samples": 1}, 1)
        return {"wall_per_round_s": r["wall_s"]}

    def many() -> dict[str, float]:
        r = _sweep(tmp, {**fixed, "num_samples": n, "max_concurrent_trials": slots}, 1)
        return {"wall_per_round_s": r["wall_s"] / math.ceil(n / slots)}

    if args.only != "asha":
        overhead = compare([Case("one_trial", one), Case(f"{n}_trials_{slots}_slots", many)],
                           repeats=repeats, warmup=0, baseline="one_trial")  # fmt: skip
        notes = {"trials": n, "slots": slots, "epochs": 1}
        write_results("tune_overhead", overhead, notes=notes)
    if args.only == "overhead":
        return

    space = {"train.lr": {"loguniform": [1e-4, 5e-3]}, "model.num_layers": {"choice": [1, 2]}}
    # One seed: both sweeps sample the same trial configs; only the scheduler differs. ASHA
    # ranks by validation loss: accuracy on a small validation split ties (every trial that has
    # not learned yet predicts one class), and ASHA does not stop a trial tied with its cutoff.
    base = {"space": space, "num_samples": n, "max_concurrent_trials": slots, "seed": 7}
    base |= {"metric": "val_loss", "mode": "min"}

    def sweep(scheduler: dict) -> Callable[[], dict[str, float]]:
        def run() -> dict[str, float]:
            r = _sweep(tmp, {**base, **scheduler}, epochs)
            keys = ("trial_epochs", "winner_val_accuracy", "best", "wall_s")
            return {("best_val_loss" if k == "best" else k): r[k] for k in keys}

        return run

    none, asha = sweep({"scheduler": "none"}), sweep({"scheduler": "asha", "asha": ASHA})
    table = compare([Case("no_stopping", none), Case("asha", asha)],
                    repeats=repeats, warmup=0, baseline="no_stopping")  # fmt: skip
    notes = {"trials": n, "epochs": epochs, "slots": slots, "asha": ASHA, "seed": 7}
    write_results("tune_asha", table, notes=notes)


if __name__ == "__main__":
    main()
