"""Extractive QA end to end on real Ray + DeepSpeed (2 workers, ZeRO-2) and the real QA data the
repository ships (DRCD converted by OpenCC, CMRC 2018): a bert-base-chinese-layout checkpoint
gets fresh span heads, trains a few steps, exports, and answers the test split through n-best
decoding over windows; every answer is a substring of its context at the offsets it reports, and
the overlap baseline is scored beside it on the same questions. Cloze questions are made on the
training passages only. Serve's /v1/qa answers from the
export with a span of a context longer than the model's window, and refuses empty fields.

    python -m pytest tests/integration/test_extractive_qa.py -q      # about a minute on 2 cores
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pretrained_layouts import save_bert_chinese_layout  # tests/
from raylm import stages
from raylm.recipe import config_from_dict

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"
FILES = [DATA / "drcd" / "DRCD_dev.json.gz", DATA / "cmrc2018" / "cmrc2018_trial.json.gz"]


def test_extractive_qa_fine_tunes_a_bert_layout_folder_and_answers_from_the_context(
    tmp_path, ray_session
):
    from raylm.data.convert import converter
    from raylm.data.sources import read_squad

    t2s = converter("t2s")
    texts = [t2s(r["context"] + r["question"]) for f in FILES for r in read_squad(str(f))]
    base = save_bert_chinese_layout(tmp_path / "bert", texts)
    raw = {
        "data": {
            "source": "squad", "paths": [str(f) for f in FILES], "convert": "t2s",
            "label_column": None, "limit": 400, "max_length": 96,
            "qa": {"doc_stride": 24, "max_question_tokens": 24, "max_answer_chars": 30,
                   "cloze_questions": 2},
            "tokenizer": {"path": str(base)},
        },
        "model": {"task": "extractive_qa", "path": str(base)},
        "train": {"num_workers": 2, "zero_stage": 2, "epochs": 1, "max_steps": 10,
                  "batch_size": 16, "lr": 3e-3, "log_every": 5},
        "run": {"name": "exqa", "output_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    cfg = config_from_dict(raw)
    stats = stages.preprocess(cfg)
    assert stats["conversion"]["config"] == "t2s" and stats["conversion"]["contexts_changed"] > 0
    enc = stats["encoded"]["train"]
    # Contexts are longer than a 96-token window: each question has several windows, a few of
    # which hold the answer.
    assert enc["examples"] > 2 * stats["splits"]["train"] > 0
    assert 0 < enc["windows_with_answer"] < enc["examples"]
    # Cloze questions on the training passages only, beside the real ones.
    cloze = stats["cloze"]
    assert cloze["passages"] == stats["contexts"]["train"] and cloze["questions"] > 0
    assert sum(cloze["by_question_word"].values()) == cloze["questions"]
    splits = {s: pq.read_table(cfg.run.data_path / s).to_pylist() for s in ("train", "test")}
    made = [r for r in splits["train"] if r["id"].startswith("cloze-")]
    assert len(made) == cloze["questions"]
    assert {r["context"] for r in made} <= {
        r["context"] for r in splits["train"] if not r["id"].startswith("cloze-")
    }
    assert not any(r["id"].startswith("cloze-") for r in splits["test"])

    stages.train(cfg)
    stages.export(cfg)
    metrics = stages.evaluate(cfg)
    run_dir = cfg.run.run_dir
    meta = json.loads((run_dir / "model" / "raylm.json").read_text(encoding="utf-8"))
    assert meta["task"] == "extractive_qa" and meta["qa"]["doc_stride"] == 24

    test = metrics["test"]
    assert test["count"] == stats["splits"]["test"] > 0 and test["missing"] == 0
    assert test["windows_per_question"] > 1  # windowed, not truncated
    assert metrics["baseline"]["test"]["count"] == test["count"]
    contexts = {
        r["id"]: r["context"] for r in pq.read_table(cfg.run.data_path / "test").to_pylist()
    }
    preds = [json.loads(line) for line in (run_dir / "test_predictions.jsonl").open()]
    assert len(preds) == test["count"]
    for p in preds:
        start = p["pred_start"]
        assert contexts[p["id"]][start : start + len(p["prediction"])] == p["prediction"]
        assert 0 < len(p["prediction"]) <= 30
    # `raylm predict` over the same questions gives the same spans.
    from raylm.predict import predict_files

    out = run_dir / "predicted"
    summary = predict_files(str(run_dir), [str(cfg.run.data_path / "test")], out, concurrency=1)
    assert summary["predicted"] == len(preds) and summary["format"] == "parquet"
    spans = {r["id"]: r for r in pq.read_table(out / "predictions").to_pylist()}
    for p in preds:
        assert spans[p["id"]]["answer"] == p["prediction"]
        assert spans[p["id"]]["start"] == p["pred_start"]
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "baseline" in report and "exact_match" in report

    # The export is a plain transformers QA model.
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(str(run_dir / "model"))
    assert type(model).__name__ == "BertForQuestionAnswering"

    long_context = max(contexts.values(), key=len)
    assert len(long_context) > 2 * 96  # longer than a window of the model
    _serve_answers_spans(run_dir / "model", long_context)


def _serve_answers_spans(model_dir: Path, context: str) -> None:
    import httpx
    from ray import serve

    from raylm.serve.launch import deploy
    from serve_models import free_port  # tests/serve_models.py

    url = deploy({"reader": str(model_dir)}, {"port": free_port(), "num_cpus": 0.25})
    try:
        ask = {"context": context, "question": "这段文字讲的是什么？"}
        resp = httpx.post(f"{url}/v1/qa", json=ask, timeout=60)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["model"] == "reader" and body["windows"] > 1  # windowed, not truncated
        assert context[body["start"] : body["end"]] == body["answer"] != ""
        assert "prompt_tokens" not in body  # a span's fields only
        for field, bad in (("context", "   "), ("question", " "), ("question", "")):
            resp = httpx.post(f"{url}/v1/qa", json={**ask, field: bad}, timeout=60)
            assert 400 <= resp.status_code < 500, resp.text
            assert field in resp.text, resp.text
    finally:
        serve.shutdown()
