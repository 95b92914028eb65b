"""The Ray Data wiring of clean -> dedup -> split -> tokenizer (lm_pipeline.py adds the GPT-style
encodings on top; steps.py, dedup.py and sources.py are the pure pieces, without Ray).

    from raylm.recipe import load_config
    from raylm.data.pipeline import preprocess
    cfg = load_config("examples/sentiment_zh.yaml")
    stats = preprocess(cfg)  # into cfg.run.data_path, by default <run dir>/data

Locally this starts an embedded Ray; under `ray job submit` it joins the cluster. Writes
`<data_dir>/{train,validation,test}/*.parquet`, `rejects.jsonl`, `stats.json`, `tokenizer/`.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import ray
from ray.data.expressions import col

from raylm.data import dedup, quality, steps
from raylm.data.heldout import heldout_keys, reject_heldout
from raylm.data.inputs import find_corrupt_parquet
from raylm.data.reading import (
    RECORD_SCHEMA,
    arrow_table,
    effective,
    read_records,
    read_source,
    source_configs,
)
from raylm.data.tokenizer import load_tokenizer, train_tokenizer

if TYPE_CHECKING:
    from raylm.config import Config, DataConfig, TokenizerConfig

SPLITS = ("train", "validation", "test")
KEYED_SCHEMA = RECORD_SCHEMA.append(pa.field("key", pa.string()))
# What cleaning hands on: the keyed rows and, per row, the PII it replaced (0 when scrubbing
# is off), summed into stats.json and dropped before dedup.
PII_COLUMNS = [quality.pii_column(kind) for kind in quality.PII_KINDS]
CLEANED_SCHEMA = pa.schema([*KEYED_SCHEMA, *(pa.field(c, pa.int64()) for c in PII_COLUMNS)])
OUTPUT_SCHEMA = pa.schema(
    [("text", pa.string()), ("label", pa.int64()), ("key", pa.string()), ("split", pa.string())]
)


class _Progress:
    """One line per stage: name, counts, seconds since the previous stage and since the start."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()

    def __call__(self, stage: str, **counts: Any) -> None:
        now = time.perf_counter()
        figures = ", ".join(f"{k}={v}" for k, v in counts.items())
        took, total = now - self.last, now - self.start
        print(f"[preprocess] {stage:<10} {figures}  ({took:.1f}s, total {total:.1f}s)", flush=True)
        self.last = now

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# ----------------------------------------------------------------------------------- steps
def _clean(batch: dict[str, np.ndarray], data_cfg: DataConfig, heldout: frozenset) -> pa.Table:
    keyed = steps.add_key(steps.clean_batch(batch, data_cfg))
    out = reject_heldout(keyed, batch["text"], heldout)
    rows = len(out["text"])
    return arrow_table({c: [0] * rows for c in PII_COLUMNS} | out, CLEANED_SCHEMA)


def _pii_replaced(cleaned: ray.data.Dataset, data: DataConfig) -> dict[str, int] | None:
    """PII replaced by placeholders, by kind, over every source (None: no source scrubs)."""
    kinds = {k for src in source_configs(data) for k in src.clean.quality.scrub_pii}
    if not kinds:
        return None
    columns = [quality.pii_column(k) for k in sorted(kinds)]
    sums = cleaned.sum(columns)  # {"sum(col)": n}; one number for one column; None if empty
    if not isinstance(sums, dict):
        sums = {f"sum({columns[0]})": sums} if len(columns) == 1 else {}
    return {k: int(sums.get(f"sum({quality.pii_column(k)})") or 0) for k in sorted(kinds)}


def _cleaned_records(data: DataConfig) -> tuple[ray.data.Dataset, list[str]]:
    """Every source (the main one, then `data.also`) read and cleaned as its own config says,
    texts held out by `data.heldout_of` rejected, as one dataset; and the files read."""
    heldout = heldout_keys(data.heldout_of)  # before any read: a bad recipe path fails first
    parts, paths = [], []
    for i, source_cfg in enumerate(source_configs(data)):
        records, found = (read_records if i == 0 else read_source)(source_cfg)
        kwargs = {"data_cfg": source_cfg, "heldout": heldout}
        parts.append(records.map_batches(_clean, fn_kwargs=kwargs, batch_format="numpy"))
        paths += found
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0], paths


def _dedup_block(block: dict[str, np.ndarray], drop_conflicting: bool) -> pa.Table:
    return arrow_table(dedup.dedup_block(block, drop_conflicting), KEYED_SCHEMA)


def _by_key(ds: ray.data.Dataset, key: str, partitions: int, fn: Any, **kwargs: Any):
    """Run `fn` on batches that each hold every row of the `key` values they contain.

    With a hash shuffle (Ray's default) rows are hash-partitioned by key into one block per
    partition and `fn` handles a block of whole groups in one call: 3-4x faster than map_groups,
    which converts and calls once per group. Sort-based shuffles cannot partition by key, so
    there map_groups calls `fn` once per group (the same code: a group is a block of one key).
    """
    if ds.context.shuffle_strategy.value in ("hash_shuffle", "shuffle_v2", "gpu_shuffle"):
        return ds.repartition(partitions, keys=[key]).map_batches(
            fn, fn_kwargs=kwargs, batch_size=None, batch_format="numpy"
        )
    return ds.groupby(key, num_partitions=partitions).map_groups(
        fn, fn_kwargs=kwargs, batch_format="numpy"
    )


def _band_rows(batch: dict[str, np.ndarray], num_perm: int, shingle: int, bands: int, rows: int):
    out: dict[str, list] = {"band": [], "id": [], "sig": []}
    for key in batch["key"]:
        sig = dedup.minhash(key, num_perm, shingle)
        for band in dedup.band_keys(sig, bands, rows):
            out["band"].append(band)
            out["id"].append(dedup.stable_id(key))
            out["sig"].append(sig)
    return {"band": out["band"], "id": out["id"], "sig": np.array(out["sig"]).reshape(-1, num_perm)}


def _bucket_pairs(group: dict[str, np.ndarray], threshold: float) -> dict[str, list]:
    pairs = dedup.bucket_pairs_block(group, threshold)
    return {"a": [a for a, _ in pairs], "b": [b for _, b in pairs]}


def _mark_near(batch: dict[str, np.ndarray], drops: frozenset) -> pa.Table:
    out = dict(batch)
    out["reject_reason"] = [
        "near_duplicate" if dedup.stable_id(k) in drops else r
        for k, r in zip(batch["key"], batch["reject_reason"], strict=True)
    ]
    return arrow_table(out, KEYED_SCHEMA)


def _finalise(batch: dict[str, np.ndarray], data_cfg: DataConfig, labels: list | None) -> pa.Table:
    out = {
        "text": batch["text"],
        "label": [steps.label_to_id(lab, labels) for lab in batch["label"]],
        "key": batch["key"],
        "split": [steps.split_of(k, data_cfg.split) for k in batch["key"]],
    }
    return arrow_table(out, OUTPUT_SCHEMA)


def _kept(ds: ray.data.Dataset) -> ray.data.Dataset:
    return ds.filter(expr=col("reject_reason") == "")


def _rejected(ds: ray.data.Dataset) -> ray.data.Dataset:
    return ds.filter(expr=col("reject_reason") != "")


def _near_dedup(
    kept: ray.data.Dataset, data_cfg: DataConfig, partitions: int
) -> tuple[ray.data.Dataset, dict[str, str]]:
    """Mark `near_duplicate`s: LSH buckets are grouped in Ray; only matching id pairs come back
    (ids, not texts: the driver holds two 16-character ids per pair). Returns the marked rows
    and each removed id's cluster (the id of the row kept for it)."""
    d = data_cfg.dedup
    bands, rows = dedup.lsh_params(d.near_threshold, d.num_perm)
    kwargs = {"num_perm": d.num_perm, "shingle": d.shingle_size, "bands": bands, "rows": rows}
    buckets = kept.map_batches(_band_rows, fn_kwargs=kwargs, batch_format="numpy")
    pairs_ds = _by_key(buckets, "band", partitions, _bucket_pairs, threshold=d.near_threshold)
    pairs = [(r["a"], r["b"]) for r in pairs_ds.iter_rows()]
    clusters = dedup.near_duplicate_drops(pairs)
    drops = frozenset(clusters)
    marked = kept.map_batches(_mark_near, fn_kwargs={"drops": drops}, batch_format="numpy")
    return marked, clusters


# ----------------------------------------------------------------------------------- write
def _write_rejects(
    rejected: ray.data.Dataset, path: Path, clusters: dict[str, str]
) -> tuple[Counter, dict[str, str]]:
    """Stream the rejected records into one JSONL file (a near-duplicate names its `cluster`:
    the id of the row kept for it); return counts by reason, and the text of one removed
    member of each of the first few clusters."""
    counts: Counter = Counter()
    samples: dict[str, str] = {}
    with path.open("w", encoding="utf-8") as f:
        for batch in rejected.iter_batches(batch_size=4096, batch_format="pyarrow"):
            for rec in batch.select([*RECORD_SCHEMA.names, "key"]).to_pylist():
                rec["reason"] = rec.pop("reject_reason")
                key = rec.pop("key")
                if rec["reason"] == "near_duplicate":
                    rec["cluster"] = clusters.get(dedup.stable_id(key), "")
                    if len(samples) < NEAR_SAMPLES:
                        samples.setdefault(rec["cluster"], rec["text"])
                counts[rec["reason"]] += 1
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return counts, samples


NEAR_SAMPLES = 3  # near-duplicate pairs shown in stats.json
ROWS_PER_FILE = 50_000  # rows per written Parquet file


def _rows_with_ids(batch: dict[str, np.ndarray], ids: frozenset) -> dict[str, np.ndarray]:
    """The rows of a batch whose key's `dedup.stable_id` is one of `ids`."""
    hit = np.array([dedup.stable_id(k) in ids for k in batch["key"]], dtype=bool)
    return {"text": batch["text"][hit], "key": batch["key"][hit]}


def _near_stats(
    clusters: dict[str, str], samples: dict[str, str], final: ray.data.Dataset
) -> dict[str, Any]:
    """Clusters by size (members, the kept one included) and a few (kept, removed) pairs."""
    sizes = Counter(Counter(clusters.values()).values())
    kept = {}
    if samples:  # found by the workers: the driver receives the few kept rows, not the corpus
        found = final.select_columns(["text", "key"]).map_batches(
            _rows_with_ids, fn_kwargs={"ids": frozenset(samples)}, batch_format="numpy"
        )
        kept = {dedup.stable_id(row["key"]): row["text"] for row in found.take_all()}
    return {
        "clusters": sum(sizes.values()),
        "removed": len(clusters),
        "cluster_sizes": {str(n + 1): sizes[n] for n in sorted(sizes)},
        "samples": [{"cluster": c, "kept": kept.get(c), "removed": t} for c, t in samples.items()],
    }


def _block_counts(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    pairs = Counter(zip(batch["split"].tolist(), batch["label"].tolist(), strict=True))
    return {
        "split": np.array([s for s, _ in pairs], dtype=object),
        "label": np.array([lab for _, lab in pairs], dtype=np.int64),
        "n": np.array(list(pairs.values()), dtype=np.int64),
    }


def _block_labels(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"label": np.array(sorted(set(batch["label"].tolist())), dtype=object)}


def _distinct_labels(kept: ray.data.Dataset) -> list[str]:
    """Sorted label names seen in the data: per-block sets, merged here (no shuffle needed)."""
    per_block = kept.select_columns(["label"]).map_batches(
        _block_labels, batch_format="numpy", batch_size=None
    )
    return sorted({row["label"] for row in per_block.iter_rows()})


def _split_label_counts(final: ray.data.Dataset, labels: list | None) -> dict[str, dict[str, int]]:
    """{split: {label name: rows}}; per-block tallies are summed here (a few rows per block)."""
    counts: dict[str, Counter] = {s: Counter() for s in SPLITS}
    tallies = final.select_columns(["split", "label"]).map_batches(
        _block_counts, batch_format="numpy", batch_size=None
    )
    for row in tallies.iter_rows():
        name = labels[row["label"]] if labels and row["label"] >= 0 else "none"
        counts[row["split"]][name] += int(row["n"])
    return {s: dict(sorted(c.items())) for s, c in counts.items()}


def _write_splits(final: ray.data.Dataset, data_dir: Path) -> None:
    """One pass writes every split (hive folders split=...), then the folders get plain names."""
    staging = data_dir / "_splits"
    for folder in [staging, *(data_dir / s for s in SPLITS)]:
        shutil.rmtree(folder, ignore_errors=True)
    # Files of at most ROWS_PER_FILE rows: every later reader (encoders, packers, training)
    # then holds one bounded block per task at any corpus size.
    final.write_parquet(str(staging), partition_cols=["split"], max_rows_per_file=ROWS_PER_FILE)
    for split in SPLITS:
        written = staging / f"split={split}"
        if written.is_dir():
            written.rename(data_dir / split)
        else:  # an empty split still gets its folder, so read_split finds it
            (data_dir / split).mkdir()
    shutil.rmtree(staging, ignore_errors=True)  # absent when no record was left to write


def _tokenizer(tok_cfg: TokenizerConfig, final: ray.data.Dataset, out: Path) -> Any:
    """Train on the train split only (streamed, one batch at a time), or copy a pretrained one."""
    if tok_cfg.path:
        tok = load_tokenizer(tok_cfg.path)
        tok.save_pretrained(str(out))
        return tok
    train = final.filter(expr=col("split") == "train").select_columns(["text"])

    def texts() -> Iterator[str]:  # one fresh stream per pass of the trainer
        return (str(t) for b in train.iter_batches(batch_format="numpy") for t in b["text"])

    return train_tokenizer(texts, tok_cfg, out, tok_cfg.kind)


# ------------------------------------------------------------------------------ entrypoints
def _num_partitions(ds: ray.data.MaterializedDataset) -> int:
    """Shuffle partitions: ~64 MiB each, at least one per CPU (Ray's default of 200 is far
    too many for small data: every partition is a task and, downstream, a file)."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(cpus, 64), math.ceil(ds.size_bytes() / (64 << 20)))


def _read_all(cleaned: ray.data.Dataset, data_cfg: DataConfig) -> ray.data.MaterializedDataset:
    """Run the read and clean steps. A Parquet page that does not decode fails a Ray read task
    with an error naming no file (`Corrupt snappy compressed data`): find and name the file."""
    try:
        return cleaned.materialize()
    except Exception:
        if data_cfg.source == "parquet":
            find_corrupt_parquet(data_cfg)  # raises naming the file, if one is
        raise


def _dedup(cleaned: ray.data.Dataset, data_cfg: DataConfig, partitions: int):
    """Exact (then near) dedup of the kept rows; returns (kept, rejected) datasets and the
    near-duplicate clusters (removed id -> kept id)."""
    rejected = [_rejected(cleaned)]
    kept = _kept(cleaned)
    if data_cfg.dedup.exact:
        drop = data_cfg.dedup.drop_conflicting_labels
        marked = _by_key(kept, "key", partitions, _dedup_block, drop_conflicting=drop)
        marked = marked.materialize()
        rejected.append(_rejected(marked))
        kept = _kept(marked)
    if data_cfg.dedup.near:
        marked, clusters = _near_dedup(kept, data_cfg, partitions)
        marked = marked.materialize()
        rejected.append(_rejected(marked))
        kept = _kept(marked)
    else:
        clusters = {}
    return kept, rejected[0].union(*rejected[1:]) if len(rejected) > 1 else rejected[0], clusters


def preprocess(cfg: Config, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Read, clean, dedup, split and write the data of `cfg.data`; train/copy the tokenizer.

    Writes into `data_dir` (default `cfg.run.data_path`, i.e. `<run dir>/data`) and returns the
    stats also written to `<data_dir>/stats.json`.
    """
    progress = _Progress()
    data_cfg = effective(cfg.data)
    data_dir = Path(data_dir) if data_dir is not None else cfg.run.data_path
    data_dir.mkdir(parents=True, exist_ok=True)

    cleaned, paths = _cleaned_records(cfg.data)
    cleaned = _read_all(cleaned, data_cfg)  # the one copy of the corpus (spilled beyond budget)
    n_input = cleaned.count()  # free: a materialized dataset knows its row count
    partitions = _num_partitions(cleaned)
    pii = _pii_replaced(cleaned, cfg.data)
    progress("clean", input=n_input, **({"pii_replaced": sum(pii.values())} if pii else {}))

    keyed = cleaned.select_columns(KEYED_SCHEMA.names)  # lazy: no second copy
    kept, rejected, clusters = _dedup(keyed, data_cfg, partitions)
    labels = data_cfg.labels
    if labels is None and data_cfg.label_column is not None:
        labels = _distinct_labels(kept)
    # Sorted by key (a hash of the normalised text): the dedup shuffle hands rows on in the
    # order its tasks finish, and what is packed into blocks next depends on the order.
    final = (
        kept.map_batches(
            _finalise, fn_kwargs={"data_cfg": data_cfg, "labels": labels}, batch_format="numpy"
        )
        .sort(["key", "text"])
        .materialize()
    )
    progress("dedup", kept=final.count())

    _write_splits(final, data_dir)
    label_counts = _split_label_counts(final, labels)
    split_counts = {s: sum(label_counts[s].values()) for s in SPLITS}
    rejects, near_samples = _write_rejects(rejected, data_dir / "rejects.jsonl", clusters)
    n_output = sum(split_counts.values())
    progress("write", **split_counts, rejected=sum(rejects.values()))

    stats = {
        "input_records": n_input,
        "output_records": n_output,
        "duplicates": rejects.get("duplicate", 0),
        "rejected": dict(sorted(rejects.items())),
        "splits": split_counts,
        "labels": labels or [],
        "label_counts": label_counts,
        "source": data_cfg.source,
        "paths": [str(p) for p in paths],
    }
    if data_cfg.dedup.near:
        # Removed, not moved: no near-copy of a kept text is in any split (its own or another).
        stats["near_duplicates"] = _near_stats(clusters, near_samples, final)
    if pii is not None:
        stats["pii_replaced"] = pii  # texts kept, PII replaced by <EMAIL>, <PHONE>, <ID_CARD>
    if n_input != n_output + sum(rejects.values()):
        raise RuntimeError(f"record counts do not add up: {stats}")
    if split_counts["train"] == 0:  # nothing to train a tokenizer on; the caller refuses it
        (data_dir / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2) + "\n")
        return stats

    tok = _tokenizer(data_cfg.tokenizer, final, data_dir / "tokenizer")
    progress("tokenizer", vocab=len(tok))
    stats["elapsed_s"] = round(progress.elapsed, 2)
    (data_dir / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2) + "\n")
    return stats


def read_split(data_dir: str | Path, split: str) -> ray.data.Dataset:
    """One split that `preprocess` wrote into `data_dir`: text, label (class id, -1: none), key;
    its rows in the order they were written (sorted by key), for every stage that reads it:
    what a packer puts into one block depends on the order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: one of {SPLITS}")
    folder = Path(data_dir) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not found; run preprocess into {data_dir} first")
    if not any(folder.glob("*.parquet")):
        return ray.data.from_arrow(OUTPUT_SCHEMA.remove(3).empty_table())
    ds = ray.data.read_parquet(str(folder))
    ds.context.execution_options.preserve_order = True  # this Dataset's own copy of the context
    return ds


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(tokenizer_dir: str) -> Any:
    """One tokenizer load per Ray worker process: tasks reuse their processes across epochs."""
    return load_tokenizer(tokenizer_dir)


@functools.lru_cache(maxsize=4)
def _rust_encoder(tokenizer_dir: str, max_length: int) -> Any:
    """The tokenizer's Rust core alone (`tokenizer.json`), truncating at `max_length`: the ids of
    `AutoTokenizer(texts, truncation=True, max_length=...)` without importing transformers into
    each Ray Data worker (about 3 s and 250 MiB a process). None: the folder has no
    tokenizer.json (a slow tokenizer), so the transformers one encodes."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def encode_ids(texts: list[str], tokenizer_dir: str, max_length: int) -> list[list[int]]:
    """Token ids of each text, special tokens added, truncated at `max_length`, not padded."""
    fast = _rust_encoder(tokenizer_dir, max_length)
    if fast is not None:
        return [e.ids for e in fast.encode_batch(texts)]
    tok = _cached_tokenizer(tokenizer_dir)
    return tok(texts, truncation=True, max_length=max_length)["input_ids"]


def _encode_batch(batch: dict[str, np.ndarray], tokenizer_dir: str, max_length: int) -> pa.Table:
    ids = encode_ids([str(t) for t in batch["text"]], tokenizer_dir, max_length)
    return pa.table(
        {
            "input_ids": pa.array(ids, pa.list_(pa.int32())),
            "labels": pa.array(np.asarray(batch["label"], dtype=np.int64)),
        }
    )


def encode_classification(
    ds: ray.data.Dataset, tokenizer_dir: str | Path, max_length: int
) -> ray.data.Dataset:
    """Lazily map rows (text, label) to `input_ids` (int32 lists, truncated to max_length, not
    padded: the trainer's collate pads) and `labels` (int64).

    Ray tasks, not an actor pool: an epoch re-executes the dataset, and a pool would start its
    actors (and load the tokenizer) again every epoch, ~10-20 s each on 2 cores; task worker
    processes are reused, and each keeps its tokenizer loaded (`_rust_encoder`)."""
    return ds.map_batches(
        _encode_batch,
        fn_kwargs={"tokenizer_dir": str(tokenizer_dir), "max_length": max_length},
        batch_format="numpy",
        batch_size=1024,
    )
