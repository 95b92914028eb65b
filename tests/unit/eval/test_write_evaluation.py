"""What every task's evaluation stage leaves in the run folder: report.md, metrics.json, plots."""

from __future__ import annotations

import json

from raylm.eval.report import read_history, write_evaluation


def test_classification_evaluation_writes_report_plots_and_metrics(tmp_path):
    history = [
        {"step": s, "epoch": s / 10, "train_loss": 1 / s, "lr": 1e-3} for s in range(1, 21)
    ] + [{"step": 20, "epoch": 2.0, "val_loss": 0.4, "val_f1": 0.8}]
    (tmp_path / "train_result.json").write_text(json.dumps({"history": history}))
    metrics = {
        "test": {"accuracy": 0.8123, "f1": 0.8, "confusion_matrix": [[40, 10], [9, 41]]},
        "baseline": {"test": {"accuracy": 0.7912, "f1": 0.79, "fit_seconds": 1.5}},
    }
    write_evaluation(tmp_path, metrics, [[40, 10], [9, 41]], ["neg", "pos"])
    assert read_history(tmp_path) == history
    assert (tmp_path / "learning_curve.png").stat().st_size > 5000
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 5000
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test"]["accuracy"] == 0.8123 and saved["baseline"]["test"]["fit_seconds"] == 1.5
    report = (tmp_path / "report.md").read_text()
    assert "0.8123" in report and "0.7912" in report  # model beside baseline
    assert "![learning_curve](learning_curve.png)" in report
    assert "![confusion_matrix](confusion_matrix.png)" in report


def test_language_model_evaluation_without_history_or_labels(tmp_path):
    write_evaluation(tmp_path, {"test": {"perplexity": 123.4, "loss": 4.8}})
    assert read_history(tmp_path) == []
    assert not list(tmp_path.glob("*.png"))
    report = (tmp_path / "report.md").read_text()
    assert "123.4" in report and "perplexity" in report
