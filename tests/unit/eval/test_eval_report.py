"""metrics.json merging and the report.md table.

Run: python -m pytest tests/unit/eval/test_eval_report.py -q
"""

import json
import math

import numpy as np
import pytest

from raylm.eval.report import write_report


def test_merge_keeps_old_keys(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"train": {"steps": 100}}))
    write_report(tmp_path, {"model": {"val": {"accuracy": 0.9, "f1": 0.8}}})
    write_report(tmp_path, {"model": {"val": {"perplexity": 12.0}}, "baseline": {"val": {}}})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["train"] == {"steps": 100}
    assert saved["model"]["val"] == {"accuracy": 0.9, "f1": 0.8, "perplexity": 12.0}


def test_report_compares_model_and_baseline(tmp_path):
    model = {"accuracy": 0.9, "precision": 0.8, "recall": 0.7, "f1": 0.75, "average": "binary"}
    baseline = {"accuracy": 0.85, "precision": 0.9, "recall": 0.6, "f1": 0.72}
    paths = write_report(tmp_path, {"model": {"test": model}})
    write_report(tmp_path, {"baseline": {"metrics": {"test": baseline}, "fit_seconds": 2.5}})
    md = (tmp_path / "report.md").read_text()
    assert paths["report_md"] == str(tmp_path / "report.md")
    assert "| metric | model | baseline | model - baseline |" in md
    assert "| accuracy | 0.9000 | 0.8500 | +0.0500 |" in md
    assert "| precision | 0.8000 | 0.9000 | -0.1000 |" in md
    assert "| f1 | 0.7500 | 0.7200 | +0.0300 |" in md
    assert "baseline fit 2.5 s" in md


def test_report_shows_qa_and_perplexity_keys(tmp_path):
    write_report(tmp_path, {"model": {"exact_match": 0.61, "f1": 0.83, "perplexity": 7.25}})
    md = (tmp_path / "report.md").read_text()
    assert "### all" in md
    assert "| exact_match | 0.6100 |" in md and "| perplexity | 7.250 |" in md
    assert "accuracy" not in md


def test_numpy_and_non_finite_values(tmp_path):
    write_report(tmp_path, {"model": {"val": {"accuracy": np.float32(0.5), "count": np.int64(4)}}})
    write_report(tmp_path, {"model": {"val": {"perplexity": math.inf}}, "cm": np.eye(2, dtype=int)})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["model"]["val"] == {"accuracy": 0.5, "count": 4, "perplexity": None}
    assert saved["cm"] == [[1, 0], [0, 1]]
    with pytest.raises(TypeError, match="baseline.pipeline"):
        write_report(tmp_path, {"baseline": {"pipeline": object()}})


def test_corrupt_metrics_file_is_not_overwritten(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        write_report(tmp_path, {"model": {"accuracy": 1.0}})
    assert (tmp_path / "metrics.json").read_text() == "{not json"
