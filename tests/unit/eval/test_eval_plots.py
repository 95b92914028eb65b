"""Plots write real PNG files, including from sparse histories and non-ASCII label names.

Run: python -m pytest tests/unit/eval/test_eval_plots.py -q
"""

import math

import pytest

from raylm.eval.plots import plot_confusion_matrix, plot_learning_curve, plot_trials

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_bytes=5_000):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes  # a blank canvas would be far smaller


def _history(steps=120, eval_every=20):
    rows = []
    for s in range(1, steps + 1):
        row = {"step": s, "epoch": s / 40, "train_loss": 1.0 / math.sqrt(s), "lr": 1e-4 * s / steps}
        if s % eval_every == 0:
            row |= {"val_loss": 1.2 / math.sqrt(s), "val_accuracy": 1 - 0.5 / s**0.3}
            row["val_f1"] = row["val_accuracy"] - 0.02
        rows.append(row)
    return rows


def test_learning_curve(tmp_path):
    out = plot_learning_curve(_history(), tmp_path / "sub" / "curve.png", title="tiny run")
    _assert_png(out)


@pytest.mark.parametrize(
    "history",
    [
        [{"step": 1, "epoch": 0.1, "train_loss": 2.0}],  # one row, no validation
        [{"step": s, "train_loss": 1 / s, "val_loss": None} for s in range(1, 5)],  # no epoch
        [{"step": 5, "epoch": 1.0, "val_accuracy": 0.8}],  # validation only
    ],
)
def test_learning_curve_sparse_histories(tmp_path, history):
    _assert_png(plot_learning_curve(history, tmp_path / "c.png"), min_bytes=2_000)


def test_confusion_matrix(tmp_path):
    _assert_png(plot_confusion_matrix([[812, 58], [73, 857]], ["neg", "pos"], tmp_path / "cm.png"))


def test_confusion_matrix_labels_without_a_font(tmp_path):
    cm = [[5, 1, 0], [2, 3, 1], [0, 0, 0]]  # an empty row: no division by zero
    _assert_png(plot_confusion_matrix(cm, ["负面", "中性", "正面"], tmp_path / "cm3.png"))


def test_trials(tmp_path):
    curves = {f"t{i}": [(e, 0.5 + 0.05 * e * (i + 1) / 5) for e in range(1, 6)] for i in range(4)}
    curves["stopped"] = []
    _assert_png(plot_trials(curves, "val_f1", tmp_path / "trials.png", x_label="epoch"))
    _assert_png(plot_trials({"t0": [(1, 2.0), (2, 1.5)]}, "val_loss", tmp_path / "loss.png"))
