"""raylm.predict's pure parts: which model and task, which reader, the question rows and their
rejects, the output folder rule and the writer's counts. The Ray job itself is tested in
tests/integration/test_train.py (classifier) and test_extractive_qa.py (spans)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylm.predict import (
    SUMMARY,
    Target,
    _check_output,
    _Output,
    infer_format,
    question_rows,
    resolve_target,
    room_problem,
)


def _model_folder(path, meta):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if meta is not None:
        (path / "raylm.json").write_text(json.dumps(meta))
    return path


def test_a_run_folder_resolves_to_its_model_with_the_recorded_cleaning(tmp_path):
    clean = {"nfkc": False, "min_chars": 5}
    prep = {"clean": clean, "convert": "t2s", "text_column": "review"}
    _model_folder(tmp_path / "run" / "model", {"task": "classification", "preprocess": prep})
    target = resolve_target(str(tmp_path / "run"))
    assert target.model_dir == str(tmp_path / "run" / "model")
    assert (target.task, target.kind, target.convert) == ("classification", "classify", "t2s")
    assert target.clean.nfkc is False and target.clean.min_chars == 5


def test_a_folder_raylm_did_not_write_needs_a_task_and_is_not_cleaned(tmp_path):
    folder = _model_folder(tmp_path / "hf", None)
    with pytest.raises(ValueError, match="--task"):
        resolve_target(str(folder))
    target = resolve_target(str(folder), task="extractive_qa")
    assert target.kind == "extract" and target.clean is None


def test_models_that_predict_nothing_and_folders_without_a_model_are_refused(tmp_path):
    folder = _model_folder(tmp_path / "mlm", {"task": "mlm"})
    with pytest.raises(ValueError, match="task 'mlm' predicts nothing"):
        resolve_target(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="raylm export"):
        resolve_target(str(tmp_path / "empty"))


def test_the_reader_follows_the_first_files_extension(tmp_path):
    for name in ("a.jsonl", "b.csv", "c.parquet", "d.txt", "e.json.gz"):
        (tmp_path / name).write_text("x")
    assert infer_format([str(tmp_path / "a.jsonl")]) == "jsonl"
    assert infer_format([str(tmp_path / "b.csv")]) == "csv"
    assert infer_format([str(tmp_path / "c.parquet")]) == "parquet"
    assert infer_format([str(tmp_path / "d.txt")]) == "text"
    assert infer_format([str(tmp_path / "e.json.gz")]) == "jsonl"


def test_question_rows_count_every_bad_line_by_reason():
    lines = [
        b'{"id": "q1", "question": "\xe8\xb0\x81?", "context": "ctx"}',
        b"not json",
        b"[1, 2]",
        b'{"question": "q"}',
        b'{"context": "c"}',
        b"",
        b"\xff\xfe",
    ]
    rows = question_rows(b"\n".join(lines), "in.jsonl", "jsonl")
    assert [r["reject_reason"] for r in rows] == [
        "", "invalid_json", "invalid_json", "missing_context", "missing_question",
        "empty", "invalid_utf8",
    ]  # fmt: skip
    assert rows[0] == {"id": "q1", "question": "谁?", "context": "ctx", "reject_reason": "",
                       "source": "in.jsonl", "line": 1}  # fmt: skip
    assert question_rows(b"", "none.jsonl", "jsonl")[0]["reject_reason"] == "empty_file"


def test_question_rows_of_a_squad_file_keep_ids_in_file_order():
    doc = {"data": [{"paragraphs": [{"context": "东汉蔡伦", "qas": [
        {"id": "a", "question": "谁?", "answers": []},
        {"id": "b", "question": " ", "answers": []},
    ]}]}]}  # fmt: skip
    rows = question_rows(json.dumps(doc).encode(), "dev.json", "squad")
    assert [(r["id"], r["line"], r["reject_reason"]) for r in rows] == [
        ("a", 1, ""), ("b", 2, "missing_question"),
    ]  # fmt: skip


def test_an_output_folder_of_anything_else_is_never_written_into(tmp_path):
    _check_output(tmp_path / "new")  # new: fine
    (tmp_path / "empty").mkdir()
    _check_output(tmp_path / "empty")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / SUMMARY).write_text("{}")
    _check_output(earlier)  # an earlier prediction is replaced whole
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="not an earlier `raylm predict` output"):
        _check_output(mine)
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_the_writer_splits_predictions_from_rejects_and_counts_them(tmp_path):
    out = _Output(tmp_path / "staging")
    batch = pa.table({
        "source": ["a", "a", "b"], "line": [1, 2, 3], "text": ["好", "", "坏"],
        "label": ["pos", "", "neg"], "reject_reason": ["", "empty", ""],
    })  # fmt: skip
    out.add(batch)
    out.add(batch.slice(1, 1))
    out.close()
    got = pq.read_table(tmp_path / "staging" / "predictions").to_pylist()
    assert [r["text"] for r in got] == ["好", "坏"] and "reject_reason" not in got[0]
    assert out.predicted == 2 and out.rejected == {"empty": 2}
    rejects = (tmp_path / "staging" / "rejects.jsonl").read_text().splitlines()
    assert json.loads(rejects[0]) == {"source": "a", "line": 2, "reason": "empty", "text": ""}


def test_target_is_picklable_for_the_actors():
    import pickle

    target = Target("m", "qa", "answer", {"task": "qa"})
    assert pickle.loads(pickle.dumps(target)) == target


def test_actors_that_would_leave_no_cpu_for_reading_are_refused_saying_what_fits():
    assert room_problem(1, 1.0, 2) is None and room_problem(2, 0.5, 2) is None
    problem = room_problem(2, 1.0, 2)
    assert "--concurrency 1 or fewer" in problem and "--cpus-per-actor 0.5 or less" in problem
    assert room_problem(3, 1.0, 4) is None and "--concurrency 3" in room_problem(4, 1.0, 4)
