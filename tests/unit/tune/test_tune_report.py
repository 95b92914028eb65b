"""A trial's row in the sweep table, from the metrics Tune recorded for it."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from raylm.tune.report import _row
from raylm.tune.settings import TuneSettings


def _result(tmp_path, recs, error=None, config=None):
    for r in recs:  # the trial's checkpoints that Ray Train kept
        if r.get("checkpoint_path") and r.pop("kept", True):
            (tmp_path / r["checkpoint_path"]).mkdir(parents=True, exist_ok=True)
            (tmp_path / r["checkpoint_path"] / "state.json").write_text("{}")
        if r.get("checkpoint_path"):
            r["checkpoint_path"] = str(tmp_path / r["checkpoint_path"])
    return SimpleNamespace(
        metrics_dataframe=pd.DataFrame(recs) if recs else None,
        metrics={"trial_id": "t1"} if recs else {},
        path=str(tmp_path / "trial_t9"),
        config=config or {"train.lr": 1e-3},
        error=error,
    )


def _settings(metric="val_f1", mode="max"):
    return TuneSettings(space={"train.lr": {"loguniform": [1e-4, 1e-2]}}, metric=metric, mode=mode)


def test_best_final_epochs_and_the_kept_checkpoint(tmp_path):
    recs = [
        {"epoch": 1, "val_f1": 0.70, "time_total_s": 10.0, "checkpoint_path": "c1"},
        {"epoch": 2, "val_f1": 0.81, "time_total_s": 20.0, "checkpoint_path": "c2", "kept": False},
        {"epoch": 3, "val_f1": 0.81, "time_total_s": 30.0, "checkpoint_path": "c3"},
    ]
    row, curve = _row(_result(tmp_path, recs), _settings(), epochs=3)
    assert row["trial_id"] == "t1" and row["train.lr"] == 1e-3
    assert row["best"] == 0.81 and row["final"] == 0.81 and row["epochs_run"] == 3.0
    # epoch 2 reached the best first, but Ray Train kept the later tie (c3) only
    assert row["best_checkpoint"] == str(tmp_path / "c3")
    assert row["stopped_early"] is False and row["status"] == "ok" and row["wall_s"] == 30.0
    assert row["error"] is None
    assert curve == [(1.0, 0.70), (2.0, 0.81), (3.0, 0.81)]


def test_stopped_early_min_mode_and_non_finite_values(tmp_path):
    recs = [
        {"epoch": 1, "val_loss": 0.9, "checkpoint_path": "c1"},
        {"epoch": 2, "val_loss": float("nan")},
    ]
    row, curve = _row(_result(tmp_path, recs), _settings("val_loss", "min"), epochs=4)
    assert row["best"] == 0.9 and row["final"] == 0.9 and row["stopped_early"] is True
    assert row["epochs_run"] == 2.0 and curve == [(1.0, 0.9)]


def test_a_trial_that_failed_before_reporting(tmp_path):
    error = RuntimeError("Traceback (most recent call last):\n  ...\nValueError: bad | shard\n")
    row, curve = _row(_result(tmp_path, [], error=error), _settings(), epochs=3)
    assert row["trial_id"] == "trial_t9" and row["status"] == "error"
    assert row["error"] == "ValueError: bad | shard"  # the cause, for the results table
    assert row["best"] is None and row["best_checkpoint"] is None and curve == []
    assert row["stopped_early"] is False
