"""Corrupt and missing data files through `raylm preprocess`, as a user sees them.

    python -m pytest tests/integration/test_bad_inputs.py -q      # about a minute on 2 cores

Each bad input ends as a counted rejection (in rejects.jsonl / stats.json, with its file and
line) inside a run that goes on, or as one `error:` line naming the file (and line), exit code 1,
no traceback, and the data a previous preprocessing wrote into the same folder untouched. The
CLI runs in this process on the session's Ray (a subprocess per case would start a Ray each), so
these see what the command prints; one case runs as a real subprocess, to see its whole stderr
(Ray's own logging included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raylm.cli import app
from raylm.data.synthetic import sentiment_recipe, write_sentiment_corpus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GBK_LINES = ["这本书写得非常好，推荐", "质量太差了，完全不值"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _recipe(
    tmp: Path, name: str, data: dict, task: str = "classification", data_dir: str = "data"
) -> Path:
    """A recipe over `data` (merged into the synthetic corpus' data section), written to YAML.
    By default it shares tmp/data, where the module's good preprocessing left its output."""
    raw = sentiment_recipe(tmp, name)
    raw["data"].update(data)
    raw["run"].update(num_cpus=2, data_dir=str(tmp / data_dir))
    if task != "classification":  # language models: BPE, no labels, the baseline's default
        raw["data"].pop("labels", None)
        raw["data"]["tokenizer"]["kind"] = "bytelevel_bpe"
        raw["model"] = {"task": task}
        raw["run"].pop("baseline")
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def _preprocess(recipe: Path, capfd=None) -> tuple[int, str]:
    """`raylm preprocess RECIPE` in this process: (exit code, what it printed on stderr).

    Not through typer's CliRunner: Ray Data sets up its log handlers on the first run, on the
    sys.stderr of that moment, which CliRunner closes when the command returns."""
    code = app(["preprocess", str(recipe)], prog_name="raylm", standalone_mode=False)
    return code or 0, capfd.readouterr().err if capfd else ""


def _rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def good(tmp_path_factory, ray_session) -> Path:
    """A folder whose data/ holds a good preprocessing, and the bad files beside it."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    write_sentiment_corpus(tmp / "corpus.jsonl", n=200, seed=0)
    assert _preprocess(_recipe(tmp, "good", {}))[0] == 0
    lines = (tmp / "corpus.jsonl").read_bytes().splitlines(keepends=True)
    cut = lines[30].decode("utf-8")[:12].encode("utf-8")  # mid-record, between characters
    (tmp / "truncated.jsonl").write_bytes(b"".join(lines[:30]) + cut)
    (tmp / "empty.jsonl").write_bytes(b"")
    gbk = [json.dumps({"text": t, "label": "pos"}, ensure_ascii=False) for t in GBK_LINES]
    (tmp / "gbk.jsonl").write_bytes("\n".join(gbk).encode("gbk"))
    (tmp / "gbk.txt").write_bytes("\n".join(GBK_LINES).encode("gbk"))
    (tmp / "nolabel.csv").write_text("text,score\n很好看的书,1\n很差的书,0\n", encoding="utf-8")
    _write_parquet(tmp)
    (tmp / "squad.json").write_text('{"data": [{"title": "T", "paragraphs": [', "utf-8")
    return tmp


def _write_parquet(tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (tmp / "corpus.jsonl").read_text("utf-8").splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp / "whole.parquet")
    data = (tmp / "whole.parquet").read_bytes()
    (tmp / "truncated.parquet").write_bytes(data[: len(data) // 2])  # a copy cut short
    pages = bytearray(data)  # footer intact, data pages overwritten
    pages[len(data) // 4 : len(data) // 2] = b"A" * (len(data) // 2 - len(data) // 4)
    (tmp / "corrupt_pages.parquet").write_bytes(bytes(pages))


# (case, data section, task, what the error line must say). Files are relative to `good`.
REFUSED = [
    ("empty_file", {"paths": ["empty.jsonl"]}, "classification", ["empty.jsonl empty_file"]),
    (
        "gbk_jsonl",
        {"paths": ["gbk.jsonl"]},
        "classification",
        ["gbk.jsonl:1 invalid_utf8", "gbk.jsonl:2 invalid_utf8", "UTF-8"],
    ),
    (
        "gbk_text",
        {"source": "text", "paths": ["gbk.txt"]},
        "causal_lm",
        ["gbk.txt:1 invalid_utf8", "gbk.txt:2 invalid_utf8"],
    ),
]
# Whole-file problems: refused before the run folder records the config and before Ray work.
UNREADABLE = [
    (
        "csv_without_label_column",
        {"source": "csv", "paths": ["nolabel.csv"]},
        "classification",
        ["nolabel.csv:1: the CSV header has no label column 'label' (columns: text, score)"],
    ),
    (
        "truncated_parquet",
        {"source": "parquet", "paths": ["truncated.parquet"]},
        "classification",
        ["truncated.parquet: not a readable Parquet file", "magic bytes not found"],
    ),
    (
        "missing_path",
        {"paths": ["nowhere/x.jsonl"]},
        "classification",
        ["nowhere/x.jsonl: not found"],
    ),
]


def _absolute(tmp: Path, data: dict) -> dict:
    return {**data, "paths": [str(tmp / p) for p in data["paths"]]}


def _assert_one_error_line(code: int, err: str, says: list[str]) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(lines) == 1, err
    assert "Traceback" not in err and 'File "' not in err, err
    for text in says:
        assert text in lines[0], (text, lines[0])


@pytest.mark.parametrize("case, data, task, says", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_file_with_no_good_record_is_refused_naming_file_and_lines(
    good, capfd, case, data, task, says
):
    before = _snapshot(good / "data")
    code, err = _preprocess(_recipe(good, case, _absolute(good, data), task), capfd)
    _assert_one_error_line(code, err, says)
    assert _snapshot(good / "data") == before  # the previous preprocessing is untouched
    run_dir = good / "runs" / case
    rejects = _rejects(run_dir / "rejects.failed.jsonl")
    stats = json.loads((run_dir / "stats.failed.json").read_text(encoding="utf-8"))
    assert sum(stats["rejected"].values()) == len(rejects) == stats["input_records"] > 0
    assert all(Path(r["source"]).name == Path(data["paths"][0]).name for r in rejects)


@pytest.mark.parametrize("case, data, task, says", UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_an_unreadable_file_fails_before_anything_is_written(good, capfd, case, data, task, says):
    before = _snapshot(good / "data")
    code, err = _preprocess(_recipe(good, case, _absolute(good, data), task), capfd)
    _assert_one_error_line(code, err, says)
    assert _snapshot(good / "data") == before
    # Not even the run's config: the corrected relaunch must not be "another config".
    assert not (good / "runs" / case).exists()


def test_a_truncated_squad_file_is_one_error_naming_its_line_and_column(good, capfd):
    data = {"source": "squad", "paths": [str(good / "squad.json")], "clean": {}}
    code, err = _preprocess(_recipe(good, "squad", data, "qa"), capfd)
    _assert_one_error_line(code, err, ["squad.json:1:41: not valid JSON: Expecting value"])


def test_a_parquet_file_with_corrupt_pages_is_named(good, capfd):
    """Its footer reads, so only a Ray read task meets the bad page, with an error naming no
    file; the driver then reads each file to name it. (Ray Data still logs its own traceback of
    the failed task on stderr: not asserted here.)"""
    data = {"source": "parquet", "paths": [str(good / "corrupt_pages.parquet")]}
    code, err = _preprocess(_recipe(good, "corrupt_pages", data), capfd)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(lines) == 1, err
    assert "corrupt_pages.parquet: corrupt Parquet data in row group 0" in lines[0]


def test_a_value_error_from_a_ray_task_is_shown_without_the_workers_traceback(
    good, capfd, monkeypatch
):
    """Ray re-raises a task's ValueError as a RayTaskError that is a ValueError too, whose text
    is the worker's traceback: the command shows the error it wraps."""
    import ray.exceptions

    from raylm import stages

    cause = ValueError("x.csv:3: a bad row")
    wrapped = ray.exceptions.RayTaskError("read", "Traceback (most recent...)\n", cause)

    def preprocess(cfg):
        raise wrapped.as_instanceof_cause()

    monkeypatch.setattr(stages, "preprocess", preprocess)
    code, err = _preprocess(_recipe(good, "wrapped", {}), capfd)
    _assert_one_error_line(code, err, ["error: x.csv:3: a bad row"])


def test_bad_records_among_good_ones_are_counted_by_file_and_line(good, capfd):
    """Truncated, empty and GBK files beside a good one: the run goes on; each bad record is in
    rejects.jsonl with its file and line, counted by reason in stats.json."""
    paths = ["corpus.jsonl", "truncated.jsonl", "empty.jsonl", "gbk.jsonl"]
    data = {"paths": [str(good / p) for p in paths]}
    code, err = _preprocess(_recipe(good, "mixed", data, data_dir="mixed"), capfd)
    assert code == 0 and "Traceback" not in err, err
    stats = json.loads((good / "mixed" / "stats.json").read_text(encoding="utf-8"))
    rejects = _rejects(good / "mixed" / "rejects.jsonl")
    at = {(Path(r["source"]).name, r["line"], r["reason"]) for r in rejects}
    assert ("truncated.jsonl", 31, "invalid_json") in at
    assert ("empty.jsonl", 0, "empty_file") in at
    assert {("gbk.jsonl", 1, "invalid_utf8"), ("gbk.jsonl", 2, "invalid_utf8")} <= at
    # The 30 whole lines of truncated.jsonl repeat corpus.jsonl's first 30: duplicates.
    counts = {"duplicate": 30, "empty_file": 1, "invalid_json": 1, "invalid_utf8": 2}
    assert stats["rejected"] == counts
    assert stats["input_records"] == stats["output_records"] + sum(counts.values())


def test_csv_rows_cut_short_or_not_utf8_are_counted_by_line(good, capfd):
    """Arrow's CSV reader failed the whole read on a short row and read a GBK column as bytes
    (their repr became the training text); each is now one reject naming its line."""
    rows = ["text,label", "这本书写得非常好，推荐,pos", "质量太差了，完全不值,neg", "物流很快"]
    gbk = "内容空洞,neg\n".encode("gbk")
    (good / "mixed.csv").write_bytes("\n".join(rows).encode() + b"\n" + gbk + "好,neg\n".encode())
    data = {"source": "csv", "paths": [str(good / "mixed.csv")]}
    code, err = _preprocess(_recipe(good, "mixed_csv", data, data_dir="mixed_csv"), capfd)
    assert code == 0 and "Traceback" not in err, err
    rejects = _rejects(good / "mixed_csv" / "rejects.jsonl")
    assert {(r["line"], r["reason"]) for r in rejects} == {
        (4, "invalid_csv"),
        (5, "invalid_utf8"),
        (6, "too_short"),
    }


def test_the_command_prints_one_line_and_no_traceback(good):
    """A real `raylm preprocess` process (its own embedded Ray): the whole stderr."""
    recipe = _recipe(good, "subprocess", _absolute(good, {"paths": ["gbk.jsonl"]}))
    env = {**os.environ, "RAY_ADDRESS": "local"}  # a new embedded Ray, never a running cluster
    done = subprocess.run(
        [sys.executable, "-m", "raylm.cli", "preprocess", str(recipe)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    _assert_one_error_line(done.returncode, done.stderr, ["gbk.jsonl:1 invalid_utf8"])
