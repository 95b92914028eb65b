"""The SQuAD reader of the QA preprocessing: limit over several files, rejects, counts."""

from __future__ import annotations

import json
from pathlib import Path

from raylm.data.lm_pipeline import encoded_counts, read_qa
from raylm.recipe import config_from_dict


def _squad(path, prefix: str, n: int, dup_last: bool = False):
    qas = [
        {
            "id": f"{prefix}{i}",
            "question": f"问题{prefix}{i}?",
            "answers": [{"text": "答", "answer_start": 0}],
        }
        for i in range(n)
    ]
    if dup_last:
        qas.append({**qas[-1], "id": f"{prefix}dup"})
    doc = {
        "data": [{"title": prefix, "paragraphs": [{"context": f"答 {prefix} 上下文", "qas": qas}]}]
    }
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return str(path)


def _cfg(paths, limit=None):
    return config_from_dict(
        {
            "data": {"source": "squad", "paths": paths, "label_column": None, "limit": limit,
                     "tokenizer": {"kind": "bytelevel_bpe"}},
            "model": {"task": "qa"},
        }
    )  # fmt: skip


def test_limit_counts_kept_questions_over_all_files(tmp_path):
    paths = [_squad(tmp_path / f"{p}.json", p, 5) for p in "abc"]
    rows, rejected, n_input, _ = read_qa(_cfg(paths, limit=7), tmp_path)
    assert len(rows) == 7  # 5 from a, 2 from b, none from c
    assert [r["id"] for r in rows] == [*(f"a{i}" for i in range(5)), "b0", "b1"]
    assert n_input == 7 and not rejected


def test_rejects_are_counted_and_written(tmp_path):
    paths = [_squad(tmp_path / "a.json", "a", 3, dup_last=True)]
    rows, rejected, n_input, _ = read_qa(_cfg(paths), tmp_path)
    assert len(rows) == 3 and rejected == {"duplicate": 1} and n_input == 4
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").open(encoding="utf-8")]
    assert rejects[0]["reason"] == "duplicate" and rejects[0]["source"].endswith("a.json")


class _Once(list):
    """A list that counts how often it is walked through."""

    walks = 0

    def __iter__(self):
        type(self).walks += 1
        return super().__iter__()


def test_encoded_counts_walk_the_lengths_a_fixed_number_of_times():
    lengths = _Once([128] * 500 + [17, 90])
    counts = encoded_counts(lengths)
    assert counts == {"examples": 502, "tokens": 128 * 500 + 107, "short_blocks": 2}
    assert _Once.walks <= 3  # was one walk per block (max() inside the loop)
    assert encoded_counts([]) == {"examples": 0, "tokens": 0, "short_blocks": 0}


def test_a_repeated_question_id_is_rejected_not_merged(tmp_path):
    # Two files numbering their questions alike: scoring by id would mix their answers.
    paths = [_squad(tmp_path / f"{p}.json", "q", 2) for p in "ab"]
    text = Path(paths[1]).read_text(encoding="utf-8").replace("上下文", "另一段")
    Path(paths[1]).write_text(text, encoding="utf-8")  # other passages, the same ids
    rows, rejected, n_input, _ = read_qa(_cfg(paths), tmp_path)
    assert [r["id"] for r in rows] == ["q0", "q1"] and rejected == {"duplicate_id": 2}
