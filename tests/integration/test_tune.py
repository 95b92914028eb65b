"""Real Ray Tune over real TorchTrainer + DeepSpeed trials on a tiny generated corpus.

One ASHA sweep (two trials, MLflow tracking) whose driver is killed (SIGKILL) after its first
trial completed, then resumed: the completed trial is not rerun, the other runs to its end, and
the results table, curves plot, best_config.yaml (loaded back as a Config), exported best model
and the MLflow runs (one parent, a child per trial) are those of one whole sweep.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from raylm import stages
from raylm.data.synthetic import sentiment_recipe, write_sentiment_corpus
from raylm.recipe import config_from_dict, load_config

pytestmark = pytest.mark.integration


def _cfg(tmp: Path, name: str, tune: dict, epochs: int = 2) -> dict:
    train = {"epochs": epochs, "batch_size": 32, "lr": 2e-3, "log_every": 5}
    train |= {"shuffle_buffer": 64, "keep_checkpoints": 1}
    return {**sentiment_recipe(tmp, name, runs="sweeps", **train), "tune": tune}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("tune")
    write_sentiment_corpus(tmp / "corpus.jsonl", n=400)
    stats = stages.preprocess(config_from_dict(_cfg(tmp, "prep", tune=None)))
    assert stats["splits"]["train"] > 200
    return tmp


_DRIVER = """
import sys, ray
from raylm.recipe import load_config
from raylm.tune.search import run_sweep
ray.init(address="local", num_cpus=4, include_dashboard=True)
run_sweep(load_config(sys.argv[1]))
"""


def _starts(sweep: Path) -> dict[str, int]:
    logs = (sweep / "trials").glob("*/starts.log")
    return {p.parent.name: len(p.read_text().splitlines()) for p in logs}


def _kill_after_first_trial(path: Path, sweep: Path) -> dict[str, int]:
    """Run the sweep in a driver process of its own; SIGKILL it (and its Ray) once the second
    trial has started, one trial at a time: the first one is then complete."""
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1", "RAY_ADDRESS": ""}
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(path)], env=env, start_new_session=True
    )
    try:
        deadline = time.time() + 600
        while len(_starts(sweep)) < 2:
            assert proc.poll() is None, "sweep driver exited before the kill"
            assert time.time() < deadline, "first trial did not finish in time"
            time.sleep(1)
        time.sleep(3)  # let Tune save its experiment state (every 1 s here)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return _starts(sweep)


def test_killed_asha_sweep_resumes_without_rerunning_its_finished_trial_and_reports(prepared):
    import yaml

    from raylm.tune.search import run_sweep

    tune = {
        "space": {
            "train.lr": {"loguniform": [1e-4, 3e-3]},
            "model.num_layers": {"choice": [1, 2]},
        },
        "num_samples": 2,  # trial 1: the config's defaults; trial 2: sampled
        "scheduler": "asha",
        # Stop on the loss, pick the winner by the sweep's metric (Tune refuses a metric set
        # twice: this runs Ray's own check).
        "asha": {"grace_period": 1, "reduction_factor": 2, "metric": "val_loss"},
        # A trial holds ~3 of the session's 4 logical CPUs (its worker + the Ray Data encoders
        # of its train and validation sets): two at once would starve each other's data.
        "max_concurrent_trials": 1,
    }
    raw = _cfg(prepared, "asha", tune)
    raw["run"]["tracking"] = {"mlflow": True}  # one parent MLflow run, a child per trial
    path = prepared / "asha.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    sweep = prepared / "sweeps" / "asha"
    before = _kill_after_first_trial(path, sweep)
    assert len(before) == 2

    result = run_sweep(load_config(path), resume=True)
    after = _starts(sweep)
    assert sorted(after) == sorted(before)
    first_done = min(before, key=lambda n: (sweep / "trials" / n / "starts.log").stat().st_mtime)
    assert after[first_done] == 1  # the completed trial was not run again
    assert sum(after.values()) == 3  # the interrupted one ran again, to its end

    rows = list(csv.DictReader((sweep / "results.csv").open(encoding="utf-8")))
    assert len(rows) == len(result.rows) == 2
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert float(rows[0]["train.lr"]) == 2e-3 and int(rows[0]["model.num_layers"]) == 2  # defaults
    assert {"train.lr", "model.num_layers", "best", "epochs_run", "stopped_early"} <= set(rows[0])
    assert all(float(r["epochs_run"]) >= 1 for r in rows)  # grace period: one epoch each
    assert "| trial_id |" in (sweep / "results.md").read_text(encoding="utf-8")
    assert (sweep / "trials.png").stat().st_size > 1000
    best = load_config(result.best_config)
    assert best.tune is None and best.run.name == "asha_best"
    winner = next(r for r in rows if r["trial_id"] == result.best_trial)
    assert best.train.lr == pytest.approx(float(winner["train.lr"]))
    assert best.model.num_layers == int(winner["model.num_layers"])
    assert result.best_metric == max(float(r["best"]) for r in rows)
    assert (result.best_model / "config.json").is_file()
    assert (result.best_model / "model.safetensors").is_file()
    assert (sweep / "best" / "model" / "config.json").is_file()
    assert (sweep / "best" / "train_result.json").is_file()

    record = json.loads((sweep / "tracking.json").read_text(encoding="utf-8"))
    client = MlflowClient(tracking_uri=record["mlflow_uri"])
    parent = client.get_run(record["mlflow_run_id"])  # the killed driver's, continued
    assert parent.info.run_name == "asha" and parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(children) == len(rows) == 2  # the rerun trial continued its own run
    assert {c.data.params["train.lr"] for c in children} == {r["train.lr"] for r in rows}
    assert all(c.data.metrics.get("val_accuracy") is not None for c in children)
