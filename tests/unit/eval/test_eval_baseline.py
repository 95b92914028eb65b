"""TF-IDF + logistic-regression baseline on synthetic data (separable, then random labels).

Run: python -m pytest tests/unit/eval/test_eval_baseline.py -q
"""

import random

import pytest

from raylm.eval.baseline import fit_baseline

FILLER = list("的了是我在有这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之")
POSITIVE = ["好看", "喜欢", "满意", "推荐", "不错", "精彩"]
NEGATIVE = ["难看", "失望", "垃圾", "退货", "糟糕", "无聊"]


def _review(rng, cue_words):
    chars = rng.choices(FILLER, k=rng.randint(6, 14))
    chars.insert(rng.randrange(len(chars)), rng.choice(cue_words))
    return "".join(chars)


def _separable(rng, n):
    labels = [rng.randint(0, 1) for _ in range(n)]
    return [_review(rng, POSITIVE if y else NEGATIVE) for y in labels], labels


def test_separable_data_is_learned():
    rng = random.Random(0)
    train, val, test = _separable(rng, 300), _separable(rng, 150), _separable(rng, 150)
    out = fit_baseline(*train, {"val": val, "test": test}, num_labels=2)
    assert set(out) == {"metrics", "fit_seconds", "pipeline"}
    assert out["fit_seconds"] > 0
    for name in ("val", "test"):
        assert out["metrics"][name]["accuracy"] > 0.9
        assert out["metrics"][name]["f1"] > 0.9
        assert out["metrics"][name]["count"] == 150
    assert list(out["pipeline"].predict(["这个电影很精彩我喜欢"])) == [1]


def test_random_labels_stay_near_chance():
    rng = random.Random(1)
    texts = [_review(rng, POSITIVE + NEGATIVE) for _ in range(1000)]
    labels = [rng.randint(0, 1) for _ in texts]
    out = fit_baseline(texts[:600], labels[:600], {"test": (texts[600:], labels[600:])}, 2)
    # 400 test rows: chance is 0.5 with a standard deviation of 0.025.
    assert 0.4 < out["metrics"]["test"]["accuracy"] < 0.6


def test_three_classes_and_bad_input():
    rng = random.Random(2)
    cues = [POSITIVE, NEGATIVE, ["一般", "还行", "凑合"]]
    labels = [rng.randint(0, 2) for _ in range(360)]
    texts = [_review(rng, cues[y]) for y in labels]
    out = fit_baseline(texts[:240], labels[:240], {"val": (texts[240:], labels[240:])}, 3)
    assert out["metrics"]["val"]["average"] == "macro"
    assert out["metrics"]["val"]["accuracy"] > 0.9
    with pytest.raises(ValueError, match="single class"):
        fit_baseline(["好看", "好看"], [1, 1], {}, num_labels=2)
