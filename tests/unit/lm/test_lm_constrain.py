"""Generation constrained to the context (raylm.constrain) on a tiny GPT-2 with a byte-level BPE
tokenizer: every answer is a substring of its context, whatever the model prefers, including
when the token limit cuts a run inside a character; unconstrained rows in the same batch are
untouched.

Run: python -m pytest tests/unit/lm/test_lm_constrain.py -q
"""

from __future__ import annotations

import itertools

import pytest

from raylm.constrain import ContextConstraint
from raylm.generate import generate

CONTEXTS = [
    "国家主席江泽民发表一九九八年新年讲话，祝全国各族人民新年快乐。",
    "人民日报记者报道，北京各界群众欢度新年，经济发展良好。",
    "中共中央总书记在会上讲话",
]
PROMPTS = [f"阅读材料：{c}\n问题：讲了什么？\n答案：" for c in CONTEXTS]


def _runs(lm_tokenizer, context):
    """Every contiguous token run of the context that starts and ends on a character."""
    c = ContextConstraint.of(lm_tokenizer, context)
    return c, [
        (i, j)
        for i, j in itertools.combinations(range(len(c.ids) + 1), 2)
        if c.starts[i] and c.ends[j - 1]
    ]


def test_the_first_token_begins_a_character_and_eos_waits_for_a_boundary(lm_tokenizer):
    c, _ = _runs(lm_tokenizer, CONTEXTS[0])
    assert len(c.ids) > 10 and not all(c.starts)  # byte-level pieces of CJK characters
    first = c.allowed()
    assert lm_tokenizer.eos_token_id not in first  # no empty answer
    assert set(first) == {t for t, s in zip(c.ids, c.starts, strict=True) if s}
    inside = next(i for i in range(len(c.ids)) if not c.ends[i] and c.starts[i])
    c.advance(c.ids[inside])  # a token that leaves its character unfinished
    assert lm_tokenizer.eos_token_id not in c.allowed() or any(c.ends[p - 1] for p in c.positions)
    c.advance(c.ids[inside + 1])
    assert c.ids[inside + 2] in c.allowed() or c.ends[inside + 1]


@pytest.mark.parametrize("n", [1, 3, 8, 16])
def test_constrained_answers_are_substrings_of_the_context(tiny_lm, lm_tokenizer, n):
    rules = [ContextConstraint.of(lm_tokenizer, c) for c in CONTEXTS]
    results = generate(tiny_lm, lm_tokenizer, PROMPTS, n, constraints=rules)
    for res, context in zip(results, CONTEXTS, strict=True):
        assert res.text and res.text in context, (res.text, context)
        assert "\ufffd" not in res.text


def test_sampling_stays_on_the_page_and_free_rows_are_untouched(tiny_lm, lm_tokenizer):
    for seed in range(5):
        rules = [ContextConstraint.of(lm_tokenizer, CONTEXTS[0]), None]
        both = generate(
            tiny_lm, lm_tokenizer, PROMPTS[:2], 12, do_sample=True, seed=seed, constraints=rules
        )
        assert both[0].text in CONTEXTS[0]
    free = generate(tiny_lm, lm_tokenizer, PROMPTS[:2], 12)
    mixed = generate(
        tiny_lm, lm_tokenizer, PROMPTS[:2], 12,
        constraints=[ContextConstraint.of(lm_tokenizer, CONTEXTS[0]), None],
    )  # fmt: skip
    assert mixed[1].token_ids == free[1].token_ids
    # Not vacuous: left free, this tiny model wanders off the page.
    assert free[0].text not in CONTEXTS[0]


def test_a_model_that_prefers_eos_still_answers_with_a_span(tiny_lm, lm_tokenizer):
    def hook(module, inputs, logits):
        logits = logits.clone()
        logits[..., lm_tokenizer.eos_token_id] += 1e4
        return logits

    handle = tiny_lm.lm_head.register_forward_hook(hook)
    try:
        rule = ContextConstraint.of(lm_tokenizer, CONTEXTS[1])
        [res] = generate(tiny_lm, lm_tokenizer, PROMPTS[1:2], 8, constraints=[rule])
    finally:
        handle.remove()
    # eos is refused until the answer holds a whole character, then taken
    assert res.finish_reason == "stop" and res.text and res.text in CONTEXTS[1]
    assert res.completion_tokens == 2  # one token (a whole character or word), then eos


def test_every_span_of_the_context_can_be_generated(lm_tokenizer):
    c0, runs = _runs(lm_tokenizer, CONTEXTS[2])
    for i, j in runs[:60]:
        c = ContextConstraint.of(lm_tokenizer, CONTEXTS[2])
        for t in c0.ids[i:j]:
            assert t in c.allowed()
            c.advance(t)
        assert lm_tokenizer.eos_token_id in c.allowed()
        text = lm_tokenizer.decode(c0.ids[i:j])
        assert text in CONTEXTS[2]
