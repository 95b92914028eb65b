"""CMRC 2018 and SQuAD v1.1 question-answering scores on hand-computed cases.

Run: python -m pytest tests/unit/eval/test_eval_qa.py -q
"""

import gzip
import json
from pathlib import Path

import pytest

from raylm.eval.qa import (
    CMRC_PUNCTUATION,
    cmrc_exact_match,
    cmrc_f1,
    cmrc_segments,
    qa_scores,
    squad_exact_match,
    squad_f1,
    squad_normalize,
)

CMRC_TRIAL = Path(__file__).resolve().parents[3] / "examples/data/cmrc2018/cmrc2018_trial.json.gz"


def test_mixed_segmentation_keeps_digit_and_latin_runs_whole():
    assert cmrc_segments("2018年FIFA世界杯") == ["2018", "年", "fifa", "世", "界", "杯"]
    assert cmrc_segments("Mac OS X系统") == ["mac", "os", "x", "系", "统"]
    # Numbers stay one segment; % splits off, as nltk's tokenizer in the official script does.
    assert cmrc_segments("约2,400人，占99%") == ["约", "2,400", "人", "占", "99", "%"]


def test_chinese_punctuation_is_ignored():
    assert cmrc_segments("《北京》，「上海」。") == ["北", "京", "上", "海"]
    assert cmrc_exact_match("《北京》。", ["北京"]) == 1.0
    assert cmrc_f1("“北京”", ["北京！"]) == 1.0


def test_only_the_official_punctuation_list_is_removed():
    # The official list has no ASCII "." (nor "…"): kept so scores match the published script.
    assert cmrc_exact_match("北京.", ["北京"]) == 0.0
    assert cmrc_exact_match("北京-", ["北京"]) == 1.0


def test_contiguous_overlap_differs_from_bag_overlap():
    # Same four characters, reordered: bag-of-segments F1 would be 1.0, contiguous run is 1.
    assert cmrc_f1("京北学大", ["北京大学"]) == pytest.approx(0.25)
    # pred 2018/年/世/界/杯 vs gold 2018/年/fifa/世/界/杯: longest run 世界杯 = 3 (bag: 5).
    assert cmrc_f1("2018年世界杯", ["2018年FIFA世界杯"]) == pytest.approx(6 / 11)


def test_best_gold_answer_wins():
    # vs 北京市: overlap 2, precision 1, recall 2/3 -> F1 0.8; vs 上海: 0.
    assert cmrc_f1("北京", ["上海", "北京市"]) == pytest.approx(0.8)
    assert cmrc_exact_match("北京", ["上海", "北京市"]) == 0.0
    assert cmrc_exact_match("北京", ["北京市", "北京"]) == 1.0


@pytest.mark.parametrize("prediction", ["", "   ", "。", "《》"])
def test_empty_prediction_scores_zero(prediction):
    for answers in (["北京"], [""], ["。"]):
        assert cmrc_exact_match(prediction, answers) == 0.0
        assert cmrc_f1(prediction, answers) == 0.0
    assert squad_exact_match(prediction, [""]) == 0.0
    assert squad_f1(prediction, ["the"]) == 0.0


def test_empty_gold_does_not_crash():
    assert cmrc_f1("北京", [""]) == 0.0
    assert cmrc_f1("北京", []) == 0.0
    scores = qa_scores({"q1": "北京", "q2": "x"}, {"q1": [], "q2": [""]})
    assert scores == {"exact_match": 0.0, "f1": 0.0, "count": 2, "missing": 0}
    assert qa_scores({}, {})["count"] == 0


def test_squad_english_articles_and_punctuation():
    assert squad_normalize("The  Eiffel Tower!") == "eiffel tower"
    assert squad_exact_match("the Eiffel tower.", ["Eiffel Tower"]) == 1.0
    # Bag of tokens: order ignored.
    assert squad_f1("tower eiffel", ["Eiffel Tower"]) == 1.0
    # pred big/red/ball vs gold red/ball: precision 2/3, recall 1.
    assert squad_f1("a big red ball", ["the red ball", "blue"]) == pytest.approx(0.8)


def test_qa_scores_averages_and_counts_missing_as_zero():
    golds = {"a": ["北京市"], "b": ["2018年FIFA世界杯"], "c": ["上海"], "d": ["Eiffel Tower"]}
    preds = {"a": "北京市。", "b": "2018年世界杯", "d": "The Eiffel Tower", "extra": "ignored"}
    s = qa_scores(preds, golds, lang="auto")
    assert s["count"] == 4 and s["missing"] == 1
    assert s["exact_match"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert s["f1"] == pytest.approx((1 + 6 / 11 + 0 + 1) / 4)


def test_lang_selects_the_rules():
    golds, preds = {"d": ["Eiffel Tower"]}, {"d": "The Eiffel Tower"}
    assert qa_scores(preds, golds, lang="en")["exact_match"] == 1.0
    assert qa_scores(preds, golds, lang="auto")["exact_match"] == 1.0
    # CMRC rules keep the article: no exact match, F1 from the run "eiffel tower" (2 of 3 / 2 of 2).
    zh = qa_scores(preds, golds, lang="zh")
    assert zh["exact_match"] == 0.0 and zh["f1"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="lang"):
        qa_scores(preds, golds, lang="fr")


@pytest.mark.skipif(
    not CMRC_TRIAL.is_file(),
    reason=f"CMRC 2018 trial set missing: {CMRC_TRIAL} (shipped in the repository)",
)
def test_cmrc_trial_gold_answers_score_perfectly():
    data = json.loads(gzip.decompress(CMRC_TRIAL.read_bytes()).decode("utf-8"))
    golds = {
        qa["id"]: [a["text"] for a in qa["answers"]]
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    }
    perfect = qa_scores({k: v[0] for k, v in golds.items()}, golds)
    assert perfect == {"exact_match": 1.0, "f1": 1.0, "count": 1002, "missing": 0}
    # 40% of these answers end in "。": dropping it changes F1 nowhere and EM for 2 answers
    # that end in " 。" (the official script strips spaces *before* deleting punctuation).
    unstopped = qa_scores({k: v[0].rstrip("。") for k, v in golds.items()}, golds)
    assert unstopped["exact_match"] == pytest.approx(1000 / 1002) and unstopped["f1"] == 1.0
    # ...dropping the last non-punctuation character: F1 stays high, exact match collapses.
    ignored = "".join(CMRC_PUNCTUATION) + " "
    clipped = qa_scores({k: v[0].rstrip(ignored)[:-1] for k, v in golds.items()}, golds)
    assert clipped["exact_match"] < 0.01 and 0.5 < clipped["f1"] < 1.0
