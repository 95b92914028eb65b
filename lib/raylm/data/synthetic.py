"""A generated two-class sentiment corpus for tests, benchmarks and smoke runs.

Each text hides two cue words of its class (好/差 families) in random filler characters and ends
with its row number, so every row is unique (exact dedup keeps them all) and a tiny model can
learn the task in a few hundred steps. `noise` flips that share of labels, so that settings which
differ in quality (not only in speed) give different validation scores.
`near_pairs` makes text pairs of known shingle Jaccard for measuring near-dedup accuracy.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from raylm.data import dedup

POS = ["很好", "喜欢", "满意", "推荐", "不错", "精彩", "值得", "开心"]
NEG = ["很差", "失望", "讨厌", "后悔", "糟糕", "难看", "垃圾", "生气"]
FILL = list("这本书我们的是了在有和就都而及与着或一个没有看过买来说东西质量")


def write_sentiment_corpus(path: Path, n: int = 600, seed: int = 0, noise: float = 0.0) -> Path:
    """Write n JSONL rows {"text", "label"} (labels "pos"/"neg") to path; return path."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            label = rng.choice(["pos", "neg"])
            words = rng.sample(POS if label == "pos" else NEG, 2)
            filler = "".join(rng.choices(FILL, k=rng.randint(6, 20)))
            if noise and rng.random() < noise:
                label = "neg" if label == "pos" else "pos"
            text = f"{filler[:5]}{words[0]}{filler[5:]}{words[1]}{i}"
            f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    return path


def near_pairs(
    n: int, seed: int = 0, shingle_size: int = 5, length: tuple[int, int] = (40, 200)
) -> list[tuple[str, str, float]]:
    """n pairs (a, b, true Jaccard) whose similarity spreads over the whole 0..1 range.

    `a` is random CJK characters (U+4E00..U+9FFF, so unrelated shingles practically never
    collide) of a length drawn from `length`; `b` is `a` after random substitutions, insertions
    and deletions at random positions, their number set from a target Jaccard drawn uniformly in
    0..1 (at least one edit, so a != b). The Jaccard returned is exact: `dedup.shingles` of size
    `shingle_size` on both texts, |A & B| / |A | B|.
    """
    rng = random.Random(seed)

    def char() -> str:
        return chr(rng.randint(0x4E00, 0x9FFF))

    pairs = []
    for _ in range(n):
        a = [char() for _ in range(rng.randint(*length))]
        # An edit inside the text breaks about `shingle_size` shingles: keeping a share s of them
        # gives Jaccard s / (2 - s), so a target J needs s = 2J / (1 + J) and an edit rate
        # 1 - s ** (1 / shingle_size).
        target = rng.random()
        rate = 1 - (2 * target / (1 + target)) ** (1 / shingle_size)
        b = list(a)
        for _ in range(max(1, round(rate * len(a)))):
            i = rng.randrange(len(b))
            op = rng.random()
            if op < 1 / 3 or len(b) <= shingle_size:
                b.insert(i, char())
            elif op < 2 / 3:
                del b[i]
            else:
                b[i] = char()
        sa, sb = "".join(a), "".join(b)
        A, B = dedup.shingles(sa, shingle_size), dedup.shingles(sb, shingle_size)
        pairs.append((sa, sb, len(A & B) / len(A | B)))
    return pairs


def sentiment_recipe(tmp: Path, name: str, runs: str = "runs", **train: object) -> dict:
    """A raw config dict that trains a tiny classifier on `tmp/corpus.jsonl` (this corpus).

    Outputs go to tmp/<runs>/<name>, prepared data to tmp/data (shared by recipes in one tmp);
    `train` keys add to or override the defaults (1 worker, batch 16, no warmup).
    """
    return {
        "data": {
            "source": "jsonl",
            "paths": [str(tmp / "corpus.jsonl")],
            "labels": ["neg", "pos"],
            "max_length": 32,
            "tokenizer": {"vocab_size": 300, "min_frequency": 1},
        },
        "model": {"task": "classification", "preset": "tiny", "hidden_size": 32, "num_heads": 2},
        "train": {
            "num_workers": 1,
            "batch_size": 16,
            "warmup_ratio": 0.0,
            **train,
        },
        "run": {
            "name": name,
            "output_dir": str(tmp / runs),
            "data_dir": str(tmp / "data"),
            "baseline": False,
        },
    }
