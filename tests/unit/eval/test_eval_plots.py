"""Plots draw the numbers they are given and write real PNG files, including from sparse
histories and non-ASCII label names.

The `figure_*` builders return the Figure that the `plot_*` functions save, so the drawn lines,
texts and images are checked against the inputs; the saved PNGs are read back and checked for
their pixel size and for holding a drawing (not a blank canvas).

Run: python -m pytest tests/unit/eval/test_eval_plots.py -q
"""

import math

import numpy as np
import pytest
from matplotlib.image import imread

from raylm.eval.plots import (
    figure_confusion_matrix,
    figure_learning_curve,
    figure_trials,
    plot_confusion_matrix,
    plot_learning_curve,
    plot_trials,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DPI = 110  # plots.py draws every figure at this resolution


def _assert_png(path, min_bytes=5_000, size_in=None, min_ink=0.01):
    """A PNG file of `size_in` inches (width, height) at DPI, with at least `min_ink` of its
    pixels not white: an empty canvas of any size has none."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes  # a blank canvas would be far smaller
    pixels = imread(path)
    if size_in is not None:
        assert pixels.shape[:2] == (round(size_in[1] * DPI), round(size_in[0] * DPI))
    ink = (pixels[..., :3] < 0.95).any(axis=-1).mean()
    assert ink > min_ink, f"only {ink:.2%} of the pixels hold a drawing"
    return pixels


def _lines(ax) -> dict:
    """{label: (xs, ys)} of the axes' labelled lines (unlabelled markers left out)."""
    return {
        ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata()))
        for ln in ax.get_lines()
        if not ln.get_label().startswith("_")
    }


def _axes(fig) -> dict:
    return {ax.get_title() or ax.get_ylabel(): ax for ax in fig.axes}


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
    history = _history()
    fig = figure_learning_curve(history, title="tiny run")
    assert fig._suptitle.get_text() == "tiny run"
    axes = _axes(fig)
    assert set(axes) == {"loss", "validation metrics (best marked *)", "learning rate (x 1e-4)"}

    steps = [float(r["step"]) for r in history]
    evals = [r for r in history if "val_loss" in r]
    eval_steps = [float(r["step"]) for r in evals]
    loss = _lines(axes["loss"])
    assert set(loss) == {"train loss", "train loss (smoothed)", "val loss"}
    assert loss["train loss"] == (steps, [r["train_loss"] for r in history])
    assert loss["val loss"] == (eval_steps, [r["val_loss"] for r in evals])
    smooth_x, smooth_y = loss["train loss (smoothed)"]
    assert smooth_x == steps and smooth_y != loss["train loss"][1]  # a trend, not a copy
    assert smooth_y[-1] < smooth_y[0]  # the loss falls, and so does its trend
    assert min(loss["train loss"][1]) <= min(smooth_y) <= max(smooth_y) <= 1.0

    # The schedule on its own axis, in units of 1e-4 as the label says.
    (lr_x, lr_y) = _lines(axes["learning rate (x 1e-4)"])["learning rate"]
    assert lr_x == steps
    assert np.allclose(np.array(lr_y) * 1e-4, [r["lr"] for r in history])

    val = _lines(axes["validation metrics (best marked *)"])
    best_acc = max(r["val_accuracy"] for r in evals)  # rises, so at the last eval step
    best_f1 = max(r["val_f1"] for r in evals)
    assert set(val) == {
        f"accuracy (best {best_acc:.3f} @ step 120)",
        f"f1 (best {best_f1:.3f} @ step 120)",
    }
    by_name = {label.split(" ")[0]: xy for label, xy in val.items()}
    assert by_name["accuracy"] == (eval_steps, [r["val_accuracy"] for r in evals])
    assert by_name["f1"] == (eval_steps, [r["val_f1"] for r in evals])
    stars = [
        ln
        for ln in axes["validation metrics (best marked *)"].get_lines()
        if ln.get_marker() == "*"
    ]
    assert sorted((ln.get_xdata()[0], ln.get_ydata()[0]) for ln in stars) == sorted(
        [(120.0, best_acc), (120.0, best_f1)]
    )

    out = plot_learning_curve(history, tmp_path / "sub" / "curve.png", title="tiny run")
    assert out == str(tmp_path / "sub" / "curve.png")
    _assert_png(out, size_in=(12, 4.6))


def test_learning_curve_best_is_marked_where_it_is():
    history = [
        {"step": 10, "val_accuracy": 0.6},
        {"step": 20, "val_accuracy": 0.9},
        {"step": 30, "val_accuracy": 0.7},
    ]
    ax = _axes(figure_learning_curve(history))["validation metrics (best marked *)"]
    assert list(_lines(ax)) == ["accuracy (best 0.900 @ step 20)"]
    (star,) = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (20.0, 0.9)


@pytest.mark.parametrize(
    ("history", "drawn"),
    [
        # one row, no validation
        ([{"step": 1, "epoch": 0.1, "train_loss": 2.0}], {"train loss": ([1.0], [2.0])}),
        # no epoch; None values are not drawn
        (
            [{"step": s, "train_loss": 1 / s, "val_loss": None} for s in range(1, 5)],
            {"train loss": ([1.0, 2.0, 3.0, 4.0], [1.0, 0.5, 1 / 3, 0.25])},
        ),
        # validation only: nothing on the loss panel, the score on the other
        ([{"step": 5, "epoch": 1.0, "val_accuracy": 0.8}], {}),
    ],
)
def test_learning_curve_sparse_histories(tmp_path, history, drawn):
    axes = _axes(figure_learning_curve(history))
    assert _lines(axes["loss"]) == drawn
    metrics = "validation metrics (best marked *)"
    if any("val_accuracy" in r for r in history):
        assert _lines(axes[metrics]) == {"accuracy (best 0.800 @ step 5)": ([5.0], [0.8])}
    else:
        assert metrics not in axes  # one panel only
    size = (12, 4.6) if metrics in axes else (7, 4.6)
    _assert_png(plot_learning_curve(history, tmp_path / "c.png"), min_bytes=2_000, size_in=size)


def test_confusion_matrix(tmp_path):
    cm = [[812, 58], [73, 857]]
    ax = figure_confusion_matrix(cm, ["neg", "pos"]).axes[0]
    assert ax.images[0].get_array().tolist() == cm
    # Each cell: its count and its share of the true row (812 / 870, 58 / 870, 73 / 930, ...).
    assert [t.get_text() for t in ax.texts] == ["812\n93.3%", "58\n6.7%", "73\n7.8%", "857\n92.2%"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["neg", "pos"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["neg", "pos"]
    # 1800 rows, (812 + 857) / 1800 = 0.9272 right.
    assert ax.get_title() == "confusion matrix (n=1800, accuracy 0.927)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    out = plot_confusion_matrix(cm, ["neg", "pos"], tmp_path / "cm.png")
    _assert_png(out, size_in=(4.7, 3.8))


def test_confusion_matrix_labels_without_a_font(tmp_path):
    cm = [[5, 1, 0], [2, 3, 1], [0, 0, 0]]  # an empty row: no division by zero
    names = ["负面", "中性", "正面"]
    ax = figure_confusion_matrix(cm, names).axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts[:3] == ["5\n83.3%", "1\n16.7%", "0\n0.0%"]
    assert texts[6:] == ["0", "0", "0"]  # no share for a row without examples
    assert ax.get_title() == "confusion matrix (n=12, accuracy 0.667)"  # (5 + 3) / 12
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    # With a CJK font installed the names are drawn; without one, placeholders, never boxes.
    assert ticks in (names, ["class 0", "class 1", "class 2"]), ticks
    _assert_png(plot_confusion_matrix(cm, names, tmp_path / "cm3.png"), size_in=(5.8, 4.8))


def test_trials(tmp_path):
    curves = {f"t{i}": [(e, 0.5 + 0.05 * e * (i + 1) / 5) for e in range(1, 6)] for i in range(4)}
    curves["stopped"] = []
    ax = figure_trials(curves, "val_f1", x_label="epoch").axes[0]
    lines = ax.get_lines()
    assert len(lines) == 4  # one per trial that reported; "stopped" has nothing to draw
    # Best first (val_f1: higher is better); t3 reaches 0.5 + 0.05 * 5 * 4 / 5 = 0.7.
    best = {t: max(v for _, v in pts) for t, pts in curves.items() if pts}
    order = sorted(best, key=best.__getitem__, reverse=True)
    assert order[0] == "t3"
    assert [ln.get_label() for ln in lines] == [f"{t} (max {best[t]:.4g})" for t in order]
    for trial, ln in zip(order, lines, strict=True):
        assert list(zip(ln.get_xdata(), ln.get_ydata(), strict=True)) == curves[trial]
    assert [ln.get_linewidth() for ln in lines] == [2.6, 1.2, 1.2, 1.2]  # the best drawn bold
    assert ax.get_title() == "val_f1 per trial (best: t3)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "val_f1")
    out = plot_trials(curves, "val_f1", tmp_path / "trials.png", x_label="epoch")
    _assert_png(out, size_in=(8, 4.8))

    # A loss is minimised: the lower curve wins.
    loss = {"t0": [(1, 2.0), (2, 1.5)], "t1": [(1, 1.8), (2, 1.7)]}
    ax = figure_trials(loss, "val_loss").axes[0]
    assert [ln.get_label() for ln in ax.get_lines()] == ["t0 (min 1.5)", "t1 (min 1.7)"]
    assert ax.get_title() == "val_loss per trial (best: t0)" and ax.get_xlabel() == "step"
    _assert_png(plot_trials(loss, "val_loss", tmp_path / "loss.png"), size_in=(8, 4.8))


def test_trials_with_no_results_draws_an_empty_titled_plot():
    ax = figure_trials({"stopped": []}, "val_f1").axes[0]
    assert ax.get_lines() == [] and ax.get_legend() is None
    assert ax.get_title() == "val_f1 per trial"
