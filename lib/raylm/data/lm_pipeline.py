"""Ray Data wiring for the GPT-style tasks: causal-LM packing and generative QA.

    raylm preprocess examples/pretrain_zh.yaml   # clean/dedup/split (pipeline.py), then pack
    raylm preprocess examples/qa_cmrc.yaml       # SQuAD reader, split by passage, prompt masking

Both write encoded splits to `<data_dir>/encoded/{train,validation}/` (columns `input_ids`,
`labels`), which stream into the trainer, and add their counts to `stats.json`.
Packing: every block holds `max_length` tokens except the last block of each batch of
`PACK_BATCH_DOCS` documents (Ray Data has no end-of-input hook to carry the tail further).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import ray
from ray.data.expressions import col

from raylm.data import sources, steps
from raylm.data.pipeline import SPLITS, read_split
from raylm.data.tokenizer import load_tokenizer, train_tokenizer
from raylm.data.workers import per_process

if TYPE_CHECKING:
    from raylm.config import Config

PACK_BATCH_DOCS = 8192
ENCODED_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])


def _encoded_table(input_ids: list, labels: list) -> pa.Table:
    return pa.table(
        {
            "input_ids": pa.array(input_ids, pa.list_(pa.int32())),
            "labels": pa.array(labels, pa.list_(pa.int32())),
        },
        schema=ENCODED_SCHEMA,
    )


class _TokenizeAndPack:
    """Tokenize a batch of documents and pack them into fixed blocks (one tokenizer per process)."""

    def __init__(self, tokenizer_dir: str, block_size: int) -> None:
        from raylm.data.packing import BlockPacker

        self.tok = load_tokenizer(tokenizer_dir)
        eos = self.tok.eos_token_id
        if eos is None:
            raise ValueError(f"{tokenizer_dir}: causal-LM packing needs a tokenizer with an EOS")
        self.packer = BlockPacker(block_size, eos, flush_every_batch=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        ids = self.tok([str(t) for t in batch["text"]], add_special_tokens=False)["input_ids"]
        out = self.packer({"input_ids": ids})
        return _encoded_table(out["input_ids"], out["labels"])


def write_encoded(ds: ray.data.Dataset, folder: Path) -> dict[str, int]:
    """Write encoded rows; return example and token counts (read back from the written files)."""
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shutil.rmtree(folder, ignore_errors=True)
    ds.write_parquet(str(folder))
    lengths: list[int] = []  # read here, file by file: a second Ray Data job costs seconds
    for path in sorted(folder.glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(columns=["input_ids"]):
            lengths += pc.list_value_length(batch.column(0)).to_pylist()
    return encoded_counts(lengths)


def encoded_counts(lengths: Sequence[int]) -> dict[str, int]:
    """Examples, tokens, and blocks shorter than the longest (each batch's packed tail)."""
    longest = max(lengths, default=0)
    return {
        "examples": len(lengths),
        "tokens": int(sum(lengths)),
        "short_blocks": sum(1 for n in lengths if n < longest),
    }


def pack_causal_lm(cfg: Config, data_dir: Path) -> dict[str, Any]:
    """Tokenize + pack the train/validation/test splits written by `pipeline.preprocess`."""
    out = {}
    for split in SPLITS:
        ds = read_split(data_dir, split).select_columns(["text"])
        packed = ds.map_batches(
            **per_process(
                _TokenizeAndPack,
                tokenizer_dir=str(data_dir / "tokenizer"),
                block_size=cfg.data.max_length,
            ),
            batch_size=PACK_BATCH_DOCS,
            batch_format="numpy",
        )
        out[split] = write_encoded(packed, data_dir / "encoded" / split)
        print(
            f"[preprocess] pack       {split}: {out[split]['examples']} blocks of "
            f"{cfg.data.max_length}, {out[split]['tokens']} tokens",
            flush=True,
        )
    return out


# ------------------------------------------------------------------------------------- QA
QA_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("context", pa.string()),
        ("question", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("answer_starts", pa.list_(pa.int64())),
        ("split", pa.string()),
    ]
)


def _qa_reason(row: dict[str, Any], seen: set[tuple[str, str]], ids: set[str]) -> str:
    """Why a SQuAD row is rejected ("" when kept). A question id already kept is a reject:
    evaluation scores by id, and a second one would overwrite the first's answers."""
    if not str(row.get("context", "")).strip() or not str(row.get("question", "")).strip():
        return "empty"
    if not [a for a in row.get("answers") or [] if str(a).strip()]:
        return "missing_answer"
    key = (steps.normalize_key(row["context"]), steps.normalize_key(row["question"]))
    if key in seen:
        return "duplicate"
    if row["id"] in ids:
        return "duplicate_id"
    seen.add(key)
    ids.add(row["id"])
    return ""


def read_qa(cfg: Config, data_dir: Path) -> tuple[list[dict], Counter, int, dict | None]:
    """SQuAD rows (converted by `data.convert`) with a split by passage hash (a passage never
    crosses splits); rejects written. Returns rows, reject counts, rows read, conversion counts."""
    from raylm.data.convert import convert_squad

    paths, _ = sources.resolve_paths(cfg.data.paths)
    rows, rejected, seen, ids = [], Counter(), set(), set()
    conversion: Counter = Counter()

    def questions():
        for path in paths:
            read = sources.read_squad(path)
            if cfg.data.convert:
                read, counts = convert_squad(read, cfg.data.convert)
                conversion.update({k: v for k, v in counts.items() if k != "config"})
            yield from ((path, row) for row in read)

    with (data_dir / "rejects.jsonl").open("w", encoding="utf-8") as rej:
        for path, row in questions():
            if cfg.data.limit and len(rows) >= cfg.data.limit:
                break  # `limit` counts kept questions over all files together
            reason = _qa_reason(row, seen, ids)
            if reason:
                rejected[reason] += 1
                rej.write(
                    json.dumps({**row, "reason": reason, "source": str(path)}, ensure_ascii=False)
                    + "\n"
                )
                continue
            row["split"] = steps.split_of_passage(row["context"], cfg.data.split)
            rows.append(row)
    converted = {"config": cfg.data.convert, **conversion} if cfg.data.convert else None
    return rows, rejected, len(rows) + sum(rejected.values()), converted


def write_qa_splits(rows: list[dict], data_dir: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    counts = {}
    for split in SPLITS:
        part = [{k: r[k] for k in QA_SCHEMA.names} for r in rows if r["split"] == split]
        folder = data_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.parquet"):
            old.unlink()
        pq.write_table(pa.Table.from_pylist(part, schema=QA_SCHEMA), folder / "part-0.parquet")
        counts[split] = len(part)
    return counts


def add_qa_rows(rows: list[dict], data_dir: Path, split: str, name: str) -> int:
    """Write more rows of the QA schema into a split written by `write_qa_splits`, as their
    own file `<name>.parquet` beside its part-0.parquet."""
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: r[k] for k in QA_SCHEMA.names} for r in rows], QA_SCHEMA)
    pq.write_table(table, data_dir / split / f"{name}.parquet")
    return len(rows)


def encode_rows(
    data_dir: Path, split: str, encoder: type, kwargs: dict[str, Any]
) -> tuple[ray.data.Dataset, dict[str, int]]:
    """A split's rows through an encoder (one per worker process, loading its tokenizer once)
    that marks each output row's `reject_reason`: the kept rows (the column dropped) and the
    rejects by reason."""
    ds = (
        ray.data.read_parquet(str(data_dir / split))
        .map_batches(
            **per_process(encoder, **kwargs),
            batch_format="numpy",
            batch_size=256,
        )
        .materialize()
    )
    reasons = Counter(
        r
        for b in ds.select_columns(["reject_reason"]).iter_batches(batch_format="numpy")
        for r in b["reject_reason"].tolist()
        if r
    )
    kept = ds.filter(expr=col("reject_reason") == "").drop_columns(["reject_reason"])
    return kept, dict(reasons)


def read_and_split_qa(cfg: Config, data_dir: Path) -> tuple[list[dict], dict[str, Any]]:
    """`read_qa` + `write_qa_splits`, printed: the rows and the stats.json fields they give
    (records in and out, rejects, splits, conversion counts)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rows, rejected, n_input, conversion = read_qa(cfg, data_dir)
    split_counts = write_qa_splits(rows, data_dir)
    print(f"[preprocess] qa         {split_counts}, rejected={dict(rejected)}", flush=True)
    if conversion:
        print(f"[preprocess] convert    {conversion}", flush=True)
    return rows, {
        "input_records": n_input,
        "output_records": len(rows),
        "duplicates": rejected.get("duplicate", 0),
        "rejected": dict(rejected),
        "splits": split_counts,
        **({"conversion": conversion} if conversion else {}),
    }


def _encode_qa_split(cfg: Config, data_dir: Path, split: str, template: str) -> dict[str, Any]:
    from raylm.data.qa import QAEncoder

    kwargs = {
        "tokenizer_dir": str(data_dir / "tokenizer"),
        "max_length": cfg.data.max_length,
        "template": template,
    }
    kept, reasons = encode_rows(data_dir, split, QAEncoder, kwargs)
    kept = kept.select_columns(["input_ids", "labels"]).map_batches(
        lambda b: _encoded_table(list(b["input_ids"]), list(b["labels"])), batch_format="numpy"
    )
    counts = write_encoded(kept, data_dir / "encoded" / split)
    return {**counts, "not_encodable": reasons}


def preprocess_qa(cfg: Config, data_dir: Path) -> dict[str, Any]:
    """SQuAD-format files -> split by passage -> tokenizer -> prompt-masked train/val features."""
    from raylm.data.qa import DEFAULT_TEMPLATE

    t0 = time.perf_counter()
    rows, read = read_and_split_qa(cfg, data_dir)
    train = [r for r in rows if r["split"] == "train"]
    texts = [t for r in train for t in (r["context"], r["question"], *r["answers"])]
    if cfg.data.tokenizer.path:
        tok = load_tokenizer(cfg.data.tokenizer.path)
        tok.save_pretrained(str(data_dir / "tokenizer"))
    else:
        train_tokenizer(texts, cfg.data.tokenizer, data_dir / "tokenizer", cfg.data.tokenizer.kind)
    encoded = {
        s: _encode_qa_split(cfg, data_dir, s, DEFAULT_TEMPLATE) for s in ("train", "validation")
    }
    print(
        "[preprocess] encode     "
        + ", ".join(
            f"{s}: {e['examples']} kept, not encodable {e['not_encodable']}"
            for s, e in encoded.items()
        ),
        flush=True,
    )
    stats = {
        **read,
        "labels": [],
        "source": cfg.data.source,
        "encoded": encoded,
        "prompt_template": DEFAULT_TEMPLATE,
        "paths": [str(p) for p in cfg.data.paths],
        "elapsed_s": round(time.perf_counter() - t0, 2),
    }
    (data_dir / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2) + "\n")
    return stats


def read_encoded(data_dir: str | Path, split: str) -> ray.data.Dataset:
    folder = Path(data_dir) / "encoded" / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not found; run `raylm preprocess` for this config")
    return ray.data.read_parquet(str(folder))
