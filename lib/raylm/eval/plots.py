"""Training and evaluation plots, saved as PNG files.

    from raylm.eval.plots import plot_learning_curve, plot_confusion_matrix, plot_trials
    plot_learning_curve(history_rows, "run/learning_curve.png", title="bert-tiny sentiment")
    plot_confusion_matrix(metrics["confusion_matrix"], ["neg", "pos"], "run/confusion_matrix.png")
    plot_trials({"trial_0": [(1, 0.71), (2, 0.80)]}, "val_f1", "tune/trials.png")

Each ``plot_*`` saves the matplotlib ``Figure`` that its ``figure_*`` twin (same arguments, less
``out_png``) builds and returns, for callers (and tests) that want the drawn artists.

matplotlib is imported inside the functions and drawn through a bare ``Figure`` with the Agg
canvas, never pyplot: no global backend switch, no display needed, safe on Ray workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

__all__ = [
    "figure_confusion_matrix",
    "figure_learning_curve",
    "figure_trials",
    "plot_confusion_matrix",
    "plot_learning_curve",
    "plot_trials",
]

_CJK_FONT_HINTS = ("CJK", "Hei", "WenQuanYi", "Source Han", "SimSun", "Ming", "Gothic")
_LOWER_IS_BETTER = ("loss", "perplexity", "error")


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png: str | os.PathLike) -> str:
    out_png = os.fspath(out_png)
    os.makedirs(os.path.dirname(out_png) or ".", exist_ok=True)
    fig.savefig(out_png, facecolor="white")
    return out_png


def _series(history: Sequence[Mapping], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) for rows holding a finite ``key`` (rows may hold only some keys)."""
    xs, ys = [], []
    for row in history:
        value = row.get(key)
        if value is not None and math.isfinite(float(value)) and row.get("step") is not None:
            xs.append(float(row["step"]))
            ys.append(float(value))
    return xs, ys


def _smooth(values: list[float], span: int) -> list[float]:
    """Exponential moving average, so the trend shows through noisy per-step losses."""
    alpha, out, acc = 2.0 / (span + 1), [], values[0]
    for v in values:
        acc = alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def _linear_map(xp, fp):
    """Piecewise-linear x -> y through the points, extended by the end slopes (np.interp clamps,
    which puts the top axis' ticks in the wrong place beyond the data)."""
    import numpy as np

    xp, fp = np.asarray(xp, dtype=float), np.asarray(fp, dtype=float)
    lo, hi = (fp[1] - fp[0]) / (xp[1] - xp[0]), (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])

    def f(x):
        x = np.asarray(x, dtype=float)
        y = np.interp(x, xp, fp)
        y = np.where(x < xp[0], fp[0] + (x - xp[0]) * lo, y)
        return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * hi, y)

    return f


def _add_epoch_axis(ax, history: Sequence[Mapping]) -> None:
    """Second x axis on top in epochs, when every row's step and epoch rise together."""
    import numpy as np

    pairs = sorted({(float(r["step"]), float(r["epoch"])) for r in history if "epoch" in r})
    steps, epochs = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(pairs) < 2 or np.any(np.diff(steps) <= 0) or np.any(np.diff(epochs) <= 0):
        return
    top = ax.secondary_xaxis(
        "top", functions=(_linear_map(steps, epochs), _linear_map(epochs, steps))
    )
    top.set_xlabel("epoch")


def _draw_losses(ax, history: Sequence[Mapping]) -> None:
    xs, ys = _series(history, "train_loss")
    if len(ys) > 30:
        ax.plot(xs, ys, color="tab:blue", alpha=0.25, linewidth=0.8, label="train loss")
        smooth = _smooth(ys, max(5, len(ys) // 20))
        ax.plot(xs, smooth, color="tab:blue", linewidth=1.8, label="train loss (smoothed)")
    elif ys:
        ax.plot(xs, ys, color="tab:blue", marker=".", linewidth=1.5, label="train loss")
    vx, vy = _series(history, "val_loss")
    if vy:
        ax.plot(vx, vy, color="tab:orange", marker="o", linewidth=1.8, label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    lx, ly = _series(history, "lr")
    if ly:
        lr_ax = ax.twinx()  # the schedule, on its own scale so it does not squash the loss
        # The power of ten goes in the label: matplotlib's offset text collides with the top axis.
        exp = math.floor(math.log10(max(ly))) if max(ly) > 0 else 0
        scaled = [v / 10**exp for v in ly]
        lr_ax.plot(lx, scaled, color="gray", linestyle=":", linewidth=1.2, label="learning rate")
        lr_ax.set_ylabel(f"learning rate (x 1e{exp})" if exp else "learning rate", color="gray")
        lr_ax.tick_params(axis="y", colors="gray")
        lr_ax.set_ylim(bottom=0)
        lines = ax.get_legend_handles_labels()
        extra = lr_ax.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], loc="upper right", fontsize=9)
    elif ys or vy:
        ax.legend(loc="upper right", fontsize=9)
    _add_epoch_axis(ax, history)


def _metric_keys(history: Sequence[Mapping]) -> list[str]:
    """Validation metrics in 0..1 (val_accuracy, val_f1, val_exact_match, ...), loss excluded."""
    keys: list[str] = []
    for row in history:
        for key in row:
            if key.startswith("val_") and key != "val_loss" and key not in keys:
                keys.append(key)
    return [k for k in keys if (ys := _series(history, k)[1]) and all(0 <= y <= 1 for y in ys)]


def _draw_val_metrics(ax, history: Sequence[Mapping], keys: list[str]) -> None:
    for key in keys:
        xs, ys = _series(history, key)
        best = max(range(len(ys)), key=ys.__getitem__)
        name = f"{key.removeprefix('val_')} (best {ys[best]:.3f} @ step {xs[best]:g})"
        (line,) = ax.plot(xs, ys, marker="o", linewidth=1.8, label=name)
        ax.plot(xs[best], ys[best], marker="*", markersize=14, color=line.get_color())
    values = [y for k in keys for y in _series(history, k)[1]]
    ax.set_ylim(max(0.0, min(values) - 0.05), min(1.02, max(values) + 0.05))
    ax.set_xlabel("step")
    ax.set_ylabel("score")
    ax.set_title("validation metrics (best marked *)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    _add_epoch_axis(ax, history)


def plot_learning_curve(
    history: Sequence[Mapping], out_png: str | os.PathLike, title: str = "learning curve"
) -> str:
    """Loss (and learning rate) vs step on the left, validation metrics on a second panel.

    ``history`` rows: ``{"step", "epoch", "train_loss", "val_loss"?, "val_accuracy"?,
    "val_f1"?, "lr"?}``; a key may be missing from some rows (e.g. val only every N steps).
    Returns the PNG path.
    """
    return _save(figure_learning_curve(history, title), out_png)


def figure_learning_curve(history: Sequence[Mapping], title: str = "learning curve"):
    """The Figure that `plot_learning_curve` saves."""
    keys = _metric_keys(history)
    fig = _new_figure(12 if keys else 7, 4.6)
    axes = fig.subplots(1, 2) if keys else [fig.subplots()]
    _draw_losses(axes[0], history)
    if keys:
        _draw_val_metrics(axes[1], history, keys)
    fig.suptitle(title, fontsize=13)
    return fig


def _renderable_labels(names: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Label texts and a font family list; names whose glyphs no installed font has become
    ``class i`` (instead of empty boxes) when no CJK font is installed."""
    from matplotlib import font_manager, ft2font

    names = [str(n) for n in names]
    charmap = ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap()
    if all(ord(c) in charmap for n in names for c in n):
        return names, None
    for font in font_manager.fontManager.ttflist:
        if any(hint.lower() in font.name.lower() for hint in _CJK_FONT_HINTS):
            return names, ["DejaVu Sans", font.name]  # matplotlib falls back glyph by glyph
    return [
        n if all(ord(c) in charmap for c in n) else f"class {i}" for i, n in enumerate(names)
    ], None


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]], label_names: Sequence[str], out_png: str | os.PathLike
) -> str:
    """Heat map of counts (rows = true, columns = predicted), each cell with its count and row %."""
    return _save(figure_confusion_matrix(cm, label_names), out_png)


def figure_confusion_matrix(cm: Sequence[Sequence[int]], label_names: Sequence[str]):
    """The Figure that `plot_confusion_matrix` saves."""
    import numpy as np

    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    labels, family = _renderable_labels(label_names)
    fig = _new_figure(max(4.5, 1.1 * n + 2.5), max(3.8, 1.0 * n + 1.8))
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="count")
    row_totals = cm.sum(axis=1)
    font_size = 11 if n <= 6 else 8 if n <= 12 else 6
    for i in range(n):
        for j in range(n):
            share = f"\n{100 * cm[i, j] / row_totals[i]:.1f}%" if row_totals[i] else ""
            dark = cm[i, j] > 0.5 * cm.max()
            ax.text(
                j, i, f"{cm[i, j]}{share}", ha="center", va="center", fontsize=font_size,
                color="white" if dark else "black",
            )  # fmt: skip
    font = {"fontfamily": family} if family else {}
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels)
    for tick in (*ax.get_xticklabels(), *ax.get_yticklabels()):
        tick.set(**font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(cm.sum())
    accuracy = np.trace(cm) / total if total else 0.0
    ax.set_title(f"confusion matrix (n={total}, accuracy {accuracy:.3f})")
    return fig


def plot_trials(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    metric: str,
    out_png: str | os.PathLike,
    x_label: str = "step",
    mode: str | None = None,
) -> str:
    """One line per trial; the best trial (by its best value) drawn bold and named in the title.

    ``mode`` is ``"max"`` or ``"min"``; by default ``min`` for losses/perplexity, else ``max``.
    """
    return _save(figure_trials(curves, metric, x_label, mode), out_png)


def figure_trials(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    metric: str,
    x_label: str = "step",
    mode: str | None = None,
):
    """The Figure that `plot_trials` saves."""
    mode = mode or ("min" if any(w in metric for w in _LOWER_IS_BETTER) else "max")
    pick = min if mode == "min" else max
    scored = {t: pick(v for _, v in pts) for t, pts in curves.items() if len(pts)}
    best = pick(scored, key=scored.__getitem__) if scored else None
    fig = _new_figure(8, 4.8)
    ax = fig.subplots()
    # Legend order: best first, so the top entries answer "which trial won".
    for trial in sorted(scored, key=scored.__getitem__, reverse=mode == "max"):
        xs, ys = zip(*curves[trial], strict=True)
        ax.plot(
            xs, ys, marker="o" if len(xs) <= 20 else None, markersize=3,
            linewidth=2.6 if trial == best else 1.2, alpha=1.0 if trial == best else 0.7,
            label=f"{trial} ({mode} {scored[trial]:.4g})",
        )  # fmt: skip
    ax.set_xlabel(x_label)
    if all(float(x).is_integer() for pts in curves.values() for x, _ in pts):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs/steps: no 1.25 ticks
    ax.set_ylabel(metric)
    title = f"{metric} per trial" + (f" (best: {best})" if best is not None else "")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if scored:
        many = len(scored) > 12
        ax.legend(
            fontsize=7 if many else 9, ncol=2 if many else 1,
            loc="upper left" if many else "best", bbox_to_anchor=(1.01, 1) if many else None,
        )  # fmt: skip
    return fig
