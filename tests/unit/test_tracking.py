"""raylm.tracking without Ray: the MLflow run a raylm run opens (and continues on resume), rank
0's Tracker writing MLflow metrics and TensorBoard events from its thread, a resume that logs no
step twice, and a sink that fails switching itself off instead of stopping the run."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from raylm.recipe import config_from_dict
from raylm.tracking import RECORD, Tracker, TrackingTarget, finish_run, mlflow_uri, open_run

mlflow_tracking = pytest.importorskip("mlflow.tracking")


def _cfg(tmp_path, **tracking):
    return config_from_dict(
        {
            "data": {"source": "jsonl", "paths": ["x.jsonl"]},
            "model": {"task": "classification", "preset": "tiny"},
            "train": {"lr": 3e-4},
            "run": {"name": "r1", "output_dir": str(tmp_path), "tracking": tracking},
        }
    )


def _client(uri):
    return mlflow_tracking.MlflowClient(tracking_uri=uri)


def _board(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_tensorboard_only_by_default_and_no_mlflow_record(tmp_path):
    target = open_run(_cfg(tmp_path))
    assert target == TrackingTarget(tensorboard_dir=str(tmp_path / "r1" / "tensorboard"))
    assert not (tmp_path / "r1" / RECORD).exists()
    assert open_run(_cfg(tmp_path, tensorboard=False)) is None


def test_open_run_logs_params_and_tags_and_a_resume_continues_it(tmp_path):
    cfg = _cfg(tmp_path, mlflow=True)
    assert mlflow_uri(cfg) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    first = open_run(cfg)
    run = _client(first.mlflow_uri).get_run(first.mlflow_run_id)
    assert (
        run.data.params["train.lr"] == "0.0003"
        and run.data.params["model.task"] == "classification"
    )
    assert run.data.tags["raylm.task"] == "classification" and run.info.run_name == "r1"
    assert (
        json.loads((tmp_path / "r1" / RECORD).read_text())["mlflow_run_id"] == first.mlflow_run_id
    )
    finish_run(cfg, "KILLED")
    again = open_run(cfg)  # the relaunch of the same run name
    assert again.mlflow_run_id == first.mlflow_run_id
    assert _client(again.mlflow_uri).get_run(again.mlflow_run_id).info.status == "RUNNING"
    finish_run(cfg, "FINISHED")
    assert _client(again.mlflow_uri).get_run(again.mlflow_run_id).info.status == "FINISHED"


def test_tracker_writes_both_sinks_and_a_resume_logs_no_step_twice(tmp_path):
    target = open_run(_cfg(tmp_path, mlflow=True))
    losses = {step: 5.0 / step for step in range(2, 21, 2)}
    first = Tracker(target)
    for step in range(2, 15, 2):  # killed after step 14; its last checkpoint was at step 10
        first.log(step, {"train_loss": losses[step], "lr": 1e-3, "step": step})
    first.log(10, {"val_loss": 0.7})
    first.close()
    resumed = Tracker(target, resume_step=10)
    for step in range(12, 21, 2):  # bit-exact repeats of 12 and 14, then new steps
        resumed.log(step, {"train_loss": losses[step], "lr": 1e-3})
    resumed.log(20, {"val_loss": 0.5})
    resumed.close()
    assert not first.problems and not resumed.problems

    history = _client(target.mlflow_uri).get_metric_history(target.mlflow_run_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == sorted(
        losses.items()
    )
    vals = _client(target.mlflow_uri).get_metric_history(target.mlflow_run_id, "val_loss")
    assert sorted((m.step, m.value) for m in vals) == [(10, 0.7), (20, 0.5)]
    assert "step" not in _client(target.mlflow_uri).get_run(target.mlflow_run_id).data.metrics

    board = _board(target.tensorboard_dir)  # purge_step: the killed run's 12 and 14 dropped
    assert [s for s, _ in board["train_loss"]] == list(range(2, 21, 2))
    assert [v for _, v in board["train_loss"]] == pytest.approx([losses[s] for s in losses])


def test_a_failing_sink_is_switched_off_and_the_run_goes_on(tmp_path, capsys):
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the event folder should be")
    tracker = Tracker(TrackingTarget(tensorboard_dir=str(blocked / "tensorboard")))
    tracker.log(1, {"train_loss": 1.0})
    tracker.close()
    assert tracker.problems and "TensorBoard" in tracker.problems[0]
    assert "warning: tracking" in capsys.readouterr().out
