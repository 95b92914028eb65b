"""The pretraining-corpus leak guard's pure parts (data/heldout.py); the real run over Ray Data
is tests/integration/test_pretrain_corpus.py."""

from __future__ import annotations

import gzip
import json

import pytest

from raylm.config import SplitConfig
from raylm.data import heldout, sources, steps


def _keyed(texts: list[str], reasons: list[str] | None = None) -> dict:
    batch = {
        "text": texts,
        "label": [None] * len(texts),
        "reject_reason": reasons or [""] * len(texts),
    }
    return steps.add_key(batch)


def test_rows_whose_text_or_raw_text_is_held_out_are_rejected():
    held = frozenset(
        {steps.normalize_key("这本书很好看！"), steps.normalize_key("原文 <b>加粗</b>")}
    )
    raw = ["这本书 很好看", "完全不同的一句话", "原文 <b>加粗</b>", "这本书很好看"]
    cleaned = ["这本书 很好看", "完全不同的一句话", "原文 加粗", "这本书很好看"]
    out = heldout.reject_heldout(_keyed(cleaned, ["", "", "", "too_short"]), raw, held)
    # Punctuation, spacing and width do not hide a copy; a cleaned-away tag does not either
    # (the raw text's key is checked too); a row rejected already keeps its own reason.
    assert out["reject_reason"] == [heldout.REASON, "", heldout.REASON, "too_short"]
    assert out["key"][0] == out["key"][2] == ""
    assert heldout.reject_heldout(_keyed(cleaned), raw, frozenset()) == _keyed(cleaned)


def test_a_squad_recipe_holds_out_the_contexts_of_its_held_out_passages(tmp_path):
    articles = [
        {"title": f"t{i}", "paragraphs": [{"context": f"第{i}段材料内容", "qas": [
            {"id": str(i), "question": "问?", "answers": [{"text": "材料", "answer_start": 2}]}
        ]}]}
        for i in range(40)
    ]  # fmt: skip
    path = tmp_path / "qa.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"data": articles}).encode()))
    recipe = tmp_path / "qa.yaml"
    recipe.write_text(json.dumps({
        "data": {"source": "squad", "paths": [str(path)], "label_column": None,
                 "split": {"validation": 0.2, "test": 0.2, "salt": "s"}},
        "model": {"task": "qa"}, "run": {"name": "qa"},
    }))  # fmt: skip
    keys = heldout.heldout_keys([str(recipe)])
    split = SplitConfig(validation=0.2, test=0.2, salt="s")
    contexts = [r["text"] for r in sources.squad_context_rows(path.read_bytes(), str(path), None)]
    assert len(contexts) == 40  # one record per distinct context, in file order
    want = {steps.normalize_key(c) for c in contexts}
    want = {k for k in want if steps.split_of(k, split) != "train"}
    assert keys == want and 0 < len(keys) < 40


def test_a_missing_downstream_recipe_is_named():
    with pytest.raises(FileNotFoundError, match="data.heldout_of: nope.yaml is not a file"):
        heldout.heldout_keys(["nope.yaml"])
