"""Quality filters and PII scrubbing on hand-made Chinese and English texts:

python -m pytest tests/unit/data/test_quality.py -q
"""

import numpy as np
import pytest

from raylm.config import ConfigError, DataConfig, parse_config
from raylm.data import quality, steps
from raylm.quality_settings import QualityConfig


def batch(*texts, reasons=None):
    n = len(texts)
    return {
        "text": list(texts),
        "label": ["pos"] * n,
        "reject_reason": list(reasons) if reasons is not None else [""] * n,
    }


def reasons_of(step, *texts, **kwargs):
    return step(batch(*texts), **kwargs)["reject_reason"]


def data_cfg(**quality_fields):
    return DataConfig(
        source="text", paths=["x"], label_column=None, clean={"quality": quality_fields}
    )


# ------------------------------------------------------------------------------------ units
def test_units_are_cjk_chars_and_runs_of_other_letters_or_digits():
    assert quality.units("用Python 3训练，ok!") == ["用", "Python", "3", "训", "练", "ok"]
    assert quality.units("...!!! ，。") == []


# --------------------------------------------------------------------------- repeated_lines
def test_repeated_line_ratio_counts_lines_and_sentences_repeating_an_earlier_one():
    assert quality.repeated_line_ratio("好评！好评！好评！很满意。") == pytest.approx(0.5)
    assert quality.repeated_line_ratio("Click here. Click here. Welcome.") == pytest.approx(1 / 3)
    assert quality.repeated_line_ratio("第一行\n第二行\n第一行\n第三行") == pytest.approx(0.25)
    assert quality.repeated_line_ratio("只有一句话。") == 0
    assert quality.repeated_line_ratio("Version 1.5 is out. Version 1.6 is not.") == 0


def test_check_repeated_lines_chinese_and_english_around_the_threshold():
    texts = (
        "好评！好评！好评！很满意。",  # 2 of 4 repeat
        "Click here. Click here. Click here. Welcome.",  # 2 of 4
        "我们来了。我们看了。我们走了。我们来了。",  # 1 of 4: under 0.3
        "We came. We saw. We left. We came.",  # 1 of 4
        # 3 of 10 lines repeat: exactly at the threshold, kept
        "\n".join(["一", "二", "三", "四", "五", "六", "七", "一", "二", "三"]),
    )
    out = reasons_of(quality.check_repeated_lines, *texts, max_ratio=0.3)
    assert out == ["repeated_lines", "repeated_lines", "", "", ""]
    assert reasons_of(quality.check_repeated_lines, texts[-1], max_ratio=0.29) == ["repeated_lines"]


# -------------------------------------------------------------------------- repeated_ngrams
def test_repeated_ngram_ratio_is_the_share_of_chars_in_an_ngram_seen_before():
    assert quality.repeated_ngram_ratio("你好你好", 2) == pytest.approx(0.5)
    # words are units: "ab cd ab cd" has 8 letters, the second "ab cd" repeats 4 of them
    assert quality.repeated_ngram_ratio("ab cd ab cd", 2) == pytest.approx(0.5)
    assert quality.repeated_ngram_ratio("ab cd ab cd", 3) == 0
    assert quality.repeated_ngram_ratio("短", 8) == 0


def test_check_repeated_ngrams_chinese_and_english_around_the_threshold():
    texts = (
        "这个产品真的很好用，" * 3,
        "buy cheap watches online now " * 4,
        # a 10-char phrase twice in 51 chars: 10 / 51 = 0.196, under 0.2
        "中华人民共和国国务院今天发布通知，要求各地做好防汛工作。"
        "中华人民共和国国务院还强调，要保障群众安全和财产安全。",
        "The quick brown fox jumps over the lazy dog while the quick brown fox sleeps.",
    )
    out = reasons_of(quality.check_repeated_ngrams, *texts, max_ratio=0.2, n=8)
    assert out == ["repeated_ngrams", "repeated_ngrams", "", ""]
    ratio = quality.repeated_ngram_ratio(texts[2], 8)
    assert ratio == pytest.approx(10 / 51)
    assert reasons_of(quality.check_repeated_ngrams, texts[2], max_ratio=ratio - 0.01, n=8) == [
        "repeated_ngrams"
    ]


# ------------------------------------------------------------------- too_many_symbols_digits
def test_symbol_digit_ratio_counts_digits_and_symbols_but_not_punctuation_or_spaces():
    assert quality.symbol_digit_ratio("你好，世界！……“真的”？") == 0
    assert quality.symbol_digit_ratio("好~~ 5+ ¥30") == pytest.approx(3 / 8)  # ~+¥ punctuate
    assert quality.symbol_digit_ratio("★★ ab") == pytest.approx(0.5)
    assert quality.symbol_digit_ratio("电话<PHONE>，邮箱<EMAIL>") == 0  # placeholders: not text
    assert quality.symbol_digit_ratio("") == 0


def test_symbol_digit_ratio_counts_the_symbols_that_noise_ratio_counts():
    for text in ("★★★★★好", "乱\ufffd\ufffd码", "→ a ← b ▲", "好~~~ ¥30 25°"):
        nonspace = len(text.replace(" ", ""))
        digits = sum(ch.isdigit() for ch in text)
        symbols = round(steps.noise_ratio(text) * len(text))
        assert quality.symbol_digit_ratio(text) * nonspace == pytest.approx(symbols + digits)


def test_check_symbols_digits_chinese_and_english_around_the_threshold():
    texts = (
        "上证指数917.02914.061510.18870.18",  # a stock table row
        "Call 555 1234 5678 #### $$$ 99%",
        "明天气象预报(1998年1月3日20时—1998年1月4日20时)",  # 0.48: news, kept
        "Version 2.1 was released on 2024-01-15 with 12 fixes.",
    )
    out = reasons_of(quality.check_symbols_digits, *texts, max_ratio=0.5)
    assert out == ["too_many_symbols_digits", "too_many_symbols_digits", "", ""]
    assert reasons_of(quality.check_symbols_digits, texts[2], max_ratio=0.45) == [
        "too_many_symbols_digits"
    ]


# ------------------------------------------------------------------------------ wrong_script
def test_script_ratio_counts_letter_units_only():
    assert quality.script_ratio("使用Python和PyTorch训练模型", "cjk") == pytest.approx(7 / 9)
    assert quality.script_ratio("I met 王小明 today", "latin") == pytest.approx(3 / 6)
    assert quality.script_ratio("2024年!!! 123", "cjk") == 1  # digits and punctuation: none
    assert quality.script_ratio("Привет мир hello", "latin") == pytest.approx(1 / 3)
    assert quality.script_ratio("12345 !!!", "cjk") == 0  # no letters: no script
    assert quality.script_ratio("<EMAIL> <PHONE> 你好", "cjk") == 1


def test_check_script_expects_cjk_or_latin():
    zh = ("使用Python和PyTorch训练模型", "我爱纽约 New York", "我爱 New York City", "Hello world")
    assert reasons_of(quality.check_script, *zh, script="cjk", min_ratio=0.5) == [
        "",
        "",  # 4 of 6
        "wrong_script",  # 2 of 5
        "wrong_script",
    ]
    en = ("I met 王小明 today", "I met 王小明", "今天天气很好", "12345")
    assert reasons_of(quality.check_script, *en, script="latin", min_ratio=0.5) == [
        "",  # 3 of 6: at the threshold
        "wrong_script",  # 2 of 5
        "wrong_script",
        "wrong_script",
    ]


# -------------------------------------------------------------------- too_few_distinct_chars
def test_distinct_chars_ignores_spaces_and_placeholders():
    assert quality.distinct_chars("哈哈哈哈哈哈") == 1
    assert quality.distinct_chars("a b c d") == 4
    assert quality.distinct_chars("好 <PHONE>") == 1


def test_check_distinct_chars_chinese_and_english_around_the_threshold():
    texts = ("哈哈哈哈哈哈", "好好好好！", "hahahahaha", "我爱北京天安门", "abcde", "abcd abcd")
    out = reasons_of(quality.check_distinct_chars, *texts, min_chars=5)
    reason = "too_few_distinct_chars"
    assert out == [reason, reason, reason, "", "", reason]


# ------------------------------------------------------------------------------ PII: e-mail
@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("联系我abc.d@qq.com谢谢", "联系我<EMAIL>谢谢"),
        ("邮箱: 12345678@163.com。", "邮箱: <EMAIL>。"),
        ("mail first.last+tag@mail.example.co.uk, thanks", "mail <EMAIL>, thanks"),
        ("@张三 你好", "@张三 你好"),  # a mention
        ("user@localhost", "user@localhost"),  # no top-level domain
        ("pkg==1.2@beta", "pkg==1.2@beta"),
    ],
)
def test_scrub_email(text, scrubbed):
    out, counts = quality.scrub_pii_text(text)
    assert out == scrubbed
    assert counts == {"email": int(out != text), "phone": 0, "id_card": 0}


# ------------------------------------------------------------------------------- PII: phone
@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("电话13800138000", "电话<PHONE>"),
        ("手机：138-0013-8000。", "手机：<PHONE>。"),
        ("call +86 138 0013 8000 now", "call <PHONE> now"),
        ("(+86)13800138000", "<PHONE>"),
        ("008613800138000", "<PHONE>"),
        ("总机010-12345678转", "总机<PHONE>转"),
        ("(0755)1234567", "<PHONE>"),
        ("传真 021 62345678", "传真 <PHONE>"),
        ("0755-12345678-123", "<PHONE>"),
        ("+1 (415) 555-2671", "<PHONE>"),
        ("+44 20 7946 0958", "<PHONE>"),
        ("+81-3-1234-5678", "<PHONE>"),
        ("+14155552671", "<PHONE>"),
        ("+65 6123 4567", "<PHONE>"),
    ],
)
def test_scrub_phone(text, scrubbed):
    out, counts = quality.scrub_pii_text(text)
    assert (out, counts["phone"]) == (scrubbed, 1)


# ----------------------------------------------------------------------------- PII: ID card
def test_id_card_check_digit():
    assert quality.id_card_valid("11010519491231002X")
    assert quality.id_card_valid("11010519491231002x")
    assert quality.id_card_valid("110105199001011232")
    assert not quality.id_card_valid("110105199001011234")
    assert not quality.id_card_valid("1101051990010112")


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("身份证11010519491231002X号", "身份证<ID_CARD>号"),
        ("ID: 110105199001011232.", "ID: <ID_CARD>."),
        ("证件号110105199001011234", "证件号110105199001011234"),  # check digit fails
        ("订单号 2024011512345678", "订单号 2024011512345678"),  # 16 digits
        ("单号110105199013011232", "单号110105199013011232"),  # month 13
        ("编号A110105199001011232", "编号A110105199001011232"),  # inside a code
    ],
)
def test_scrub_id_card(text, scrubbed):
    out, counts = quality.scrub_pii_text(text)
    assert out == scrubbed
    assert counts["id_card"] == int(out != text)
    assert counts["phone"] == 0


# ------------------------------------------------------------------------- PII: look-alikes
@pytest.mark.parametrize(
    "text",
    [
        "2024-01-15",
        "20240115",
        "2024年1月15日",
        "¥1999",
        "12,999.00元",
        "$1,299.99",
        "订单号 2024011512345678",
        "v1.13.0",
        "版本 3.13800138000",
        "SN13800138000",
        "13800138000x",
        "+1 20240115",
        "+1 2024-01-15",
        "+5.2%",
        "+3.14159265358",
        "时间戳1705276800000",
        "顶+1 2024",
        "ISBN 978-7-111-12345-6",
        "QQ号 123456789",
        "银行卡 6222021234567890123",
        "北京时间 20:30:15",
    ],
)
def test_scrub_leaves_dates_prices_and_codes_alone(text):
    assert quality.scrub_pii_text(text) == (text, {"email": 0, "phone": 0, "id_card": 0})


def test_scrub_counts_several_of_each_and_only_the_kinds_asked():
    text = "a@b.cn 或 c@d.com，电话13800138000、13900139000，身份证11010519491231002X"
    out, counts = quality.scrub_pii_text(text)
    assert out == "<EMAIL> 或 <EMAIL>，电话<PHONE>、<PHONE>，身份证<ID_CARD>"
    assert counts == {"email": 2, "phone": 2, "id_card": 1}
    out, counts = quality.scrub_pii_text(text, ("phone",))
    assert out == "a@b.cn 或 c@d.com，电话<PHONE>、<PHONE>，身份证11010519491231002X"
    assert counts == {"phone": 2}


def test_scrub_pii_adds_a_count_column_per_kind_and_leaves_rejected_rows_alone():
    b = batch(
        "我的邮箱x@y.com，手机13800138000",
        "没有个人信息",
        "电话13800138000",
        reasons=["", "", "invalid_utf8"],
    )
    b = {k: np.array(v, dtype=object) for k, v in b.items()}
    out = quality.scrub_pii(b, ("email", "phone"))
    assert out["text"] == ["我的邮箱<EMAIL>，手机<PHONE>", "没有个人信息", "电话13800138000"]
    assert out["pii_email"] == [1, 0, 0]
    assert out["pii_phone"] == [1, 0, 0]
    assert "pii_id_card" not in out
    assert out["reject_reason"] == ["", "", "invalid_utf8"]  # never rejects
    assert list(b["text"])[0] == "我的邮箱x@y.com，手机13800138000"  # input untouched


# ------------------------------------------------------------------------------ clean_batch
JUNK = (
    "哈哈哈哈哈哈",
    "好评！好评！好评！很满意。",
    "这个产品真的很好用，" * 3,
    "上证指数917.02914.061510.18870.18",
    "Hello world, this is English.",
    "电话13800138000，邮箱x@y.com",
)


def test_everything_is_off_by_default():
    q = QualityConfig()
    assert not q.filters and q.scrub_pii == []
    cfg = data_cfg()
    out = steps.clean_batch(batch(*JUNK), cfg)
    assert set(out) == {"text", "label", "reject_reason"}  # no pii_* columns
    assert out["reject_reason"] == [""] * len(JUNK)
    # the same as the cleaning steps and checks run by hand
    by_hand = batch(*JUNK)
    for step in (steps.nfkc, steps.strip_control, steps.strip_html, steps.strip_urls):
        by_hand = step(by_hand)
    by_hand = steps.check_length(steps.normalize_whitespace(by_hand), 2, 2000)
    by_hand = steps.check_noise(by_hand, 0.5)
    assert out == by_hand


def test_clean_batch_runs_the_filters_when_switched_on():
    cfg = data_cfg(filters=True, expected_script="cjk")
    out = steps.clean_batch(batch(*JUNK[:5], "这本书很好看，值得一读。"), cfg)
    assert out["reject_reason"] == [
        "too_few_distinct_chars",
        "repeated_lines",
        "repeated_ngrams",
        "too_many_symbols_digits",
        "wrong_script",
        "",
    ]


def test_a_threshold_of_zero_or_null_switches_its_filter_off():
    texts = ("好评！好评！好评！很满意。", "哈哈哈哈哈哈")
    cfg = data_cfg(filters=True, max_repeated_line_ratio=0, min_distinct_chars=0)
    assert steps.clean_batch(batch(*texts), cfg)["reject_reason"] == ["", ""]
    cfg = data_cfg(filters=True, max_repeated_line_ratio=None)
    assert steps.clean_batch(batch(*texts), cfg)["reject_reason"] == ["", "too_few_distinct_chars"]


def test_clean_batch_scrubs_after_html_stripping_and_before_the_checks():
    cfg = data_cfg(filters=True, scrub_pii=["email", "phone", "id_card"])
    cfg.clean.min_chars = 8
    texts = (
        "<p>写信给 <b>a@b.cn</b> 或打 13800138000</p>",
        "13800138000",  # "<PHONE>" is 7 chars: too short once scrubbed
        "<PHONE><PHONE><PHONE>",  # stripped as tags before scrubbing
        "联系 13800138000",
    )
    out = steps.clean_batch(batch(*texts, reasons=["", "", "", "invalid_utf8"]), cfg)
    assert out["text"][0] == "写信给 <EMAIL> 或打 <PHONE>"
    assert out["reject_reason"] == ["", "too_short", "empty", "invalid_utf8"]
    assert out["pii_email"] == [1, 0, 0, 0]
    assert out["pii_phone"] == [1, 1, 0, 0]
    assert out["pii_id_card"] == [0, 0, 0, 0]
    assert out["text"][3] == "联系 13800138000"  # rejected before: untouched


def test_scrubbed_rows_keep_their_counts_when_a_filter_rejects_them():
    cfg = data_cfg(filters=True, scrub_pii=["phone"])
    out = steps.clean_batch(batch("请拨打电话13800138000联系我们，" * 3), cfg)
    assert out["reject_reason"] == ["repeated_ngrams"]
    assert out["text"] == ["请拨打电话<PHONE>联系我们," * 3]
    assert out["pii_phone"] == [3]


# ---------------------------------------------------------------------------------- config
def parse(quality_fields):
    raw = {"data": {"source": "text", "paths": ["x"], "clean": {"quality": quality_fields}}}
    return parse_config(raw, source="r.yaml")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"filters": True, "max_repeated_line_ratio": 1.5}, "quality.max_repeated_line_ratio: "),
        ({"filters": True, "max_symbol_digit_ratio": -0.1}, "quality.max_symbol_digit_ratio: "),
        ({"filters": True, "ngram_size": 1}, "quality.ngram_size: "),
        ({"filters": True, "expected_script": "arabic"}, "quality.expected_script: "),
        ({"filters": True, "min_distinct_chars": -1}, "quality.min_distinct_chars: "),
        ({"scrub_pii": ["ssn"]}, "quality.scrub_pii.0: "),
        ({"scrub_pii": ["email", "email"]}, "quality.scrub_pii: .*names a kind twice"),
        ({"expected_script": "cjk"}, "quality: .*expected_script set, but no filter runs"),
        ({"min_distinct_chars": 3}, "quality: .*min_distinct_chars set, but .*`filters: true`"),
        ({"filter": True}, "quality.filter: "),
    ],
)
def test_config_errors_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=rf"data\.clean\.{message}"):
        parse(fields)


def test_config_accepts_filters_with_changed_thresholds_and_pii_alone():
    q = parse({"filters": True, "expected_script": "latin", "max_repeated_ngram_ratio": None})
    assert q.data.clean.quality.max_repeated_ngram_ratio is None
    assert parse({"scrub_pii": ["id_card"]}).data.clean.quality.scrub_pii == ["id_card"]
