"""Generative-QA features: the prompt is masked, the answer is the target, the context window
keeps the answer in view, and what cannot fit is reported.

Run: python -m pytest tests/unit/lm/test_lm_qa.py -q
"""

from pathlib import Path

import numpy as np
import pytest

from raylm.data.qa import (
    DEFAULT_TEMPLATE,
    IGNORE_INDEX,
    QAEncoder,
    build_prompt,
    encode_qa,
    encode_qa_batch,
    prompt_batch,
    render_prompt,
)

CMRC_TRIAL = Path(__file__).resolve().parents[3] / "examples/data/cmrc2018/cmrc2018_trial.json.gz"
FILLER = "人民日报记者报道，国家经济发展良好，各地群众欢度新年。"
QUESTION = "谁开发了这个游戏？"
ANSWER = "韩国Nexon公司"


def _context(before: int, after: int) -> tuple[str, int]:
    head = FILLER * before + "这个游戏由"
    return head + ANSWER + "开发。" + FILLER * after, len(head)


def _split(feats: dict) -> int:
    """Index of the first scored position (= prompt length)."""
    labels = feats["labels"]
    return next(i for i, v in enumerate(labels) if v != IGNORE_INDEX)


def _prompt_text(tok, feats) -> str:
    return tok.decode(feats["input_ids"][: _split(feats)])


def test_prompt_positions_are_masked_and_answer_positions_carry_the_answer(lm_tokenizer):
    tok = lm_tokenizer
    context, start = _context(1, 1)
    reason, feats = encode_qa(tok, context, QUESTION, ANSWER, 512, answer_start=start)
    assert reason == ""
    p = _split(feats)
    target = tok(ANSWER, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert feats["labels"][:p] == [IGNORE_INDEX] * p
    assert feats["labels"][p:] == target
    assert feats["input_ids"][p:] == target
    # Short context: nothing cut, the prompt is the template filled in.
    assert _prompt_text(tok, feats) == render_prompt(DEFAULT_TEMPLATE, context, QUESTION)
    assert len(feats["input_ids"]) == len(feats["labels"])


@pytest.mark.parametrize(("before", "after"), [(0, 30), (15, 15), (30, 0)])
def test_window_keeps_the_answer_inside_and_fits(lm_tokenizer, before, after):
    tok = lm_tokenizer
    context, start = _context(before, after)
    full = len(tok(render_prompt(DEFAULT_TEMPLATE, context, QUESTION))["input_ids"])
    max_length = 96
    assert full > 3 * max_length  # the context really has to be cut
    reason, feats = encode_qa(tok, context, QUESTION, ANSWER, max_length, answer_start=start)
    assert reason == ""
    assert len(feats["input_ids"]) <= max_length
    assert len(feats["input_ids"]) >= max_length - 4  # the window uses the room it has
    prompt = _prompt_text(tok, feats)
    shown = prompt[len("阅读材料：") : prompt.index("\n问题：")]
    assert ANSWER in shown and shown in context
    assert prompt.endswith(f"\n问题：{QUESTION}\n答案：")


def test_window_uses_answer_start_to_pick_the_right_occurrence(lm_tokenizer):
    tok = lm_tokenizer
    # The answer text occurs twice, far apart; answer_start points at the second one.
    context = "北京" + FILLER * 20 + "首都是北京。"
    start = context.rindex("北京")
    _, feats = encode_qa(tok, context, "首都是哪里？", "北京", 48, answer_start=start)
    shown = _prompt_text(tok, feats)
    assert "首都是北京" in shown and not shown.startswith("阅读材料：北京")


def test_answer_too_long_is_reported(lm_tokenizer):
    context, start = _context(0, 0)
    long_answer = ANSWER * 20
    context = context.replace(ANSWER, long_answer)
    assert encode_qa(lm_tokenizer, context, QUESTION, long_answer, 64, answer_start=start) == (
        "answer_too_long",
        None,
    )


def test_other_rejects_and_a_shifted_answer_start(lm_tokenizer):
    context, start = _context(2, 2)
    assert encode_qa(lm_tokenizer, context, QUESTION, "", 128)[0] == "empty_answer"
    assert encode_qa(lm_tokenizer, context, QUESTION, "不存在", 128, answer_start=3)[0] == (
        "answer_not_in_context"
    )
    # An off-by-two offset (common in crowd-sourced sets) is repaired to the nearest match.
    reason, feats = encode_qa(lm_tokenizer, context, QUESTION, ANSWER, 64, answer_start=start + 2)
    assert reason == "" and ANSWER in _prompt_text(lm_tokenizer, feats)


def test_template_is_filled_in_one_pass_and_checked():
    text = render_prompt("C:{context} Q:{question}", "a {question} {x}", "q?")
    assert text == "C:a {question} {x} Q:q?"
    with pytest.raises(ValueError, match="context"):
        render_prompt("Q:{question}", "c", "q")


def test_build_prompt_leaves_room_for_new_tokens(lm_tokenizer):
    tok = lm_tokenizer
    context, _ = _context(30, 30)
    prompt = build_prompt(tok, context, QUESTION, max_length=128, max_new_tokens=40)
    n = len(tok(prompt)["input_ids"])
    assert 120 <= n + 40 <= 128
    assert prompt.startswith("阅读材料：" + FILLER[:10])  # inference keeps the head
    with pytest.raises(ValueError, match="prompt_too_long"):
        build_prompt(tok, context, QUESTION * 30, max_length=128, max_new_tokens=40)


def _squad_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    batch = {}
    for key in rows[0]:
        col = np.empty(len(rows), dtype=object)
        col[:] = [r[key] for r in rows]
        batch[key] = col
    return batch


def test_encode_qa_batch_adds_columns_and_reasons(lm_tokenizer):
    context, start = _context(3, 3)
    rows = [
        {
            "context": context,
            "question": QUESTION,
            "answers": np.array([ANSWER, "x"]),
            "answer_starts": np.array([start, 0]),
            "reject_reason": "",
        },
        {
            "context": context.replace(ANSWER, ANSWER * 40),
            "question": QUESTION,
            "answers": np.array([ANSWER * 40]),
            "answer_starts": np.array([start]),
            "reject_reason": "",
        },
        {
            "context": context,
            "question": QUESTION,
            "answers": np.array([ANSWER]),
            "answer_starts": np.array([start]),
            "reject_reason": "duplicate",
        },
    ]
    out = encode_qa_batch(_squad_batch(rows), lm_tokenizer, max_length=64)
    assert out["reject_reason"] == ["", "answer_too_long", "duplicate"]
    assert len(out["input_ids"][0]) <= 64 and out["input_ids"][1:] == [[], []]
    assert out["labels"][0][-1] == lm_tokenizer.eos_token_id
    assert list(out["question"]) == [QUESTION] * 3  # input columns pass through

    prompts = prompt_batch(_squad_batch(rows), lm_tokenizer, 64, 16)
    assert prompts["reject_reason"] == ["", "", "duplicate"]
    assert prompts["prompt"][0].endswith("答案：") and prompts["prompt"][2] == ""


def test_qa_encoder_loads_the_tokenizer_and_refuses_a_bad_template(lm_tokenizer, tmp_path):
    lm_tokenizer.save_pretrained(tmp_path)
    context, start = _context(1, 1)
    batch = _squad_batch(
        [{"context": context, "question": QUESTION, "answers": [ANSWER], "answer_starts": [start]}]
    )
    out = QAEncoder(str(tmp_path), max_length=128)(batch)
    assert out["reject_reason"] == [""]
    with pytest.raises(ValueError, match="question"):
        QAEncoder(str(tmp_path), 128, template="{context} only")


@pytest.mark.skipif(
    not CMRC_TRIAL.is_file(),
    reason=f"CMRC 2018 trial set missing: {CMRC_TRIAL} (shipped in the repository)",
)
def test_cmrc_trial_answers_stay_in_the_window_and_rejects_are_real(lm_tokenizer):
    from raylm.data.sources import read_squad

    tok = lm_tokenizer
    max_length = 160
    rows = read_squad(str(CMRC_TRIAL))[:200]
    kept = 0
    for row in rows:
        answer, question = row["answers"][0], row["question"]
        reason, feats = encode_qa(
            tok, row["context"], question, answer, max_length, answer_start=row["answer_starts"][0]
        )
        if reason:
            # The answer has to fit twice (in the context and as the target) beside the
            # template + question; only reject what truly cannot (a few tokens of seam slack).
            assert reason == "answer_too_long"
            fixed = len(tok(render_prompt(DEFAULT_TEMPLATE, "", question))["input_ids"])
            need = 2 * len(tok(answer, add_special_tokens=False)["input_ids"]) + 1 + fixed
            assert need > max_length - 6, answer
            continue
        kept += 1
        p = _split(feats)
        assert len(feats["input_ids"]) <= max_length
        full = render_prompt(DEFAULT_TEMPLATE, row["context"], question)
        if len(tok(full)["input_ids"]) + len(feats["input_ids"]) - p > max_length:
            assert len(feats["input_ids"]) >= max_length - 12  # a cut window fills the room
        assert tok.decode(feats["labels"][p:-1]) == answer
        assert answer in tok.decode(feats["input_ids"][:p])
    assert kept >= 0.6 * len(rows)
